"""Mint a staff bearer token for local use: `python -m tools.staff alice --role reviewer`."""

from datetime import timedelta
from typing import Annotated

import typer

from shared.runtime.settings import ServiceSettings
from shared.runtime.staff import Role, mint_token


def main(user: str, role: Annotated[list[Role], typer.Option(help="repeatable")],
         hours: float = 8.0) -> None:
    secret = ServiceSettings().staff_token_secret
    print(mint_token(secret, user, role, timedelta(hours=hours)))


if __name__ == "__main__":
    typer.run(main)
