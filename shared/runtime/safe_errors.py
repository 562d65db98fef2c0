"""Error text for dead letters and logs that names what broke, never the data it broke on.

A pydantic ValidationError's own text quotes each bad input (`input_value='ana@example.com'`), and
its messages may be rendered from the input too; a dead letter or a log line must not carry a
customer's email or phone, so such an error is told as field paths and error types only.
"""

import traceback
from types import TracebackType

from pydantic import ValidationError


def error_text(error: BaseException) -> str:
    """`Type: message`; for a ValidationError, `ValidationError: <model>: <field.path> [<type>]; ...`."""
    if isinstance(error, ValidationError):
        problems = "; ".join(f"{_path(e['loc'])} [{e['type']}]"
                             for e in error.errors(include_url=False, include_context=False, include_input=False))
        return f"ValidationError: {error.error_count()} invalid in {error.title}: {problems}"
    return f"{type(error).__name__}: {error}"


def exception_text(exc_info: tuple[type[BaseException], BaseException, TracebackType | None]) -> str:
    """A traceback as Python prints it (with its causes), each exception told by `error_text`."""
    chain: list[tuple[BaseException, str]] = []
    error, link = exc_info[1], ""
    while error is not None and all(error is not seen for seen, _ in chain):
        chain.append((error, link))
        if error.__cause__ is not None:
            error, link = error.__cause__, "The above exception was the direct cause of the following exception:"
        elif error.__context__ is not None and not error.__suppress_context__:
            error, link = error.__context__, "During handling of the above exception, another exception occurred:"
        else:
            error = None
    parts = []
    for error, link in reversed(chain):
        parts.append("Traceback (most recent call last):\n" + "".join(traceback.format_tb(error.__traceback__))
                     + error_text(error))
        if link:
            parts.append(link)
    return "\n\n".join(parts)


def _path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "data"
