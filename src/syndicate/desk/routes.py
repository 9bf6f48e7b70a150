"""The desk's pages and API, every area's routes added, with their /docs summaries."""

# accounts first: its /accounts/{name}/disable and /delete come before today's /accounts/{name}/{action}.
from syndicate.desk import (  # noqa: F401 - each adds routes
    accounts,
    auth,
    editions,
    feeds,
    newsletters,
    removals,
    social,
    subscribers,
    today,
)
from syndicate.desk.core import COOKIE, SESSION_HOURS, CsrfRefused, SignInRequired, api, pages, sign_in_redirect


def _summaries() -> None:
    """/docs lists each API route by the start of its docstring (up to the first '.', ':' or ';' outside
    brackets), not by its function's name; the whole docstring stays its description."""
    for route in api.routes:
        if route.summary is None and route.description:
            route.summary = _first_clause(route.description.strip().split("\n\n")[0].replace("\n", " "))


def _first_clause(text: str) -> str:
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and ch in ".:;" and text[i + 1:i + 2] in (" ", ""):
            return text[:i]
    return text


_summaries()

__all__ = ["COOKIE", "SESSION_HOURS", "CsrfRefused", "SignInRequired", "api", "pages", "sign_in_redirect"]
