"""The editors' desk: signed-in pages (/desk) and a JSON API with per-editor tokens (/api/v1, documented at
/docs) to watch and steer what goes out. Both call the same domain functions as the CLI and add no logic
of their own. Each module here holds one area's pages and API routes side by side:

  core         sessions, CSRF, who is asking (a signed-in editor, or an editor's API token)
  auth         sign in and out; an editor's own API tokens
  today        the calendar of the next days, the social kill switch, accounts
  newsletters  settings, filters, template, the schedule in words and its next sends; pause, resume, prepare
  social       one teaser: edit it with a live count, schedule, hold, cancel, re-share
  editions     one edition: preview, edit, test-send, schedule, pause, resume, cancel, resend
  feeds        feeds with their health, add one, fetch one now; recent articles and where each went
  subscribers  search, one subscriber's timeline, leave and restore; CSV import with its progress, export
"""

from syndicate.desk import auth, editions, feeds, newsletters, social, subscribers, today  # noqa: F401 - each adds routes
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
