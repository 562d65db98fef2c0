"""The currencies legal in each country, from ISO 4217 and ISO 3166 data: approval's currency-of-region rule."""

import functools
import re

import pycountry
from iso4217 import Currency


@functools.cache
def _currencies_by_country() -> dict[str, frozenset[str]]:
    # ISO 4217 names countries the way its table does ("KOREA (THE REPUBLIC OF)"); pycountry
    # knows them as "Korea, Republic of". Names that are no country (IMF, bond units) are skipped.
    found: dict[str, set[str]] = {}
    for currency in Currency:
        for name in currency.country_names:
            plain = re.sub(r"^(.*?) \((?:THE )?(.*)\)$", r"\1, \2", name.replace(" (THE)", ""))
            try:
                country = pycountry.countries.lookup(plain)
            except LookupError:
                continue
            found.setdefault(country.alpha_2, set()).add(currency.code)
    return {country: frozenset(codes) for country, codes in found.items()}


def currencies_of_country(alpha_2: str) -> frozenset[str]:
    """The ISO 4217 currencies legal in a country (empty when ISO 4217 lists none)."""
    return _currencies_by_country().get(alpha_2, frozenset())
