"""deploy/Dockerfile as `docker build --target T --build-arg K=V` would resolve it, read as text (there
is no Docker engine here): the stages the target builds on, with ARG and ENV values substituted."""

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.conftest import ROOT

DOCKERFILE = ROOT / "deploy/Dockerfile"


@dataclass
class Image:
    """What one build of the Dockerfile produces, as far as the manifests and compose rely on it."""

    bases: list[str] = field(default_factory=list)  # the third-party images of every stage it goes through
    copied: set[str] = field(default_factory=set)  # sources copied from the build context, any stage
    runs: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str = "root"
    expose: list[int] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)

    @property
    def app(self) -> str:
        """The ASGI app uvicorn serves: CMD names none, so uvicorn reads UVICORN_APP."""
        return self.env["UVICORN_APP"]

    def option(self, name: str) -> str:
        return self.cmd[self.cmd.index(name) + 1]


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; comments dropped, continuation lines joined."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def stages(path: Path = DOCKERFILE) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Stage name -> (what it is FROM, its instructions), in file order."""
    found: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    for keyword, args in instructions(path):
        if keyword == "FROM":
            base, _, name = args.partition(" AS ")
            current: list[tuple[str, str]] = []
            found[name.strip() or str(len(found))] = (base.strip(), current)
        else:
            current.append((keyword, args))
    return found


def _substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m[1] or m[2], m[0]), text)


def build(target: str | None = None, path: Path = DOCKERFILE, **build_args: str) -> Image:
    """The image of `target` (default: the last stage) with these build args."""
    all_stages = stages(path)
    image = Image()

    def apply(name: str, into: Image) -> None:
        base, steps = all_stages[name]
        if base in all_stages:
            apply(base, into)
        else:
            into.bases.append(base)
        args: dict[str, str] = {}
        for keyword, raw in steps:
            text = _substitute(raw, {**into.env, **args})
            if keyword == "ARG":
                arg, _, default = raw.partition("=")
                args[arg] = build_args.get(arg, default)
            elif keyword == "ENV":
                into.env.update(pair.split("=", 1) for pair in shlex.split(text))
            elif keyword == "COPY":
                words = shlex.split(text)
                stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
                if stage:
                    apply(stage, Image(bases=into.bases, copied=into.copied, runs=into.runs))
                else:
                    into.copied.update(w for w in words[:-1] if not w.startswith("--"))
            elif keyword == "RUN":
                into.runs.append(text)
            elif keyword == "USER":
                into.user = text
            elif keyword == "EXPOSE":
                into.expose += [int(port) for port in text.split()]
            elif keyword == "CMD":
                into.cmd = json.loads(text)

    apply(target or list(all_stages)[-1], image)
    return image


def service_image(service: str) -> Image:
    """`docker build -f deploy/Dockerfile --build-arg SERVICE=<service>`."""
    return build(SERVICE=service)


def simulator_image() -> Image:
    """`docker build -f deploy/Dockerfile --target gatewaysim`."""
    return build("gatewaysim")
