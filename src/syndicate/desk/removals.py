"""What was removed: every feed, newsletter and social account disabled, archived or deleted (and brought
back), by whom and with what it took along, newest first."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from syndicate import removals
from syndicate.db import transaction
from syndicate.desk.core import Svc, api, api_editor, editor, page, pages
from syndicate.services import Services

SHOWN = 200


def _recent(svc: Services) -> list[dict]:
    with transaction(svc.Session) as session:
        return [removals.describe(r) for r in removals.recent(session, SHOWN)]


@pages.get("/removals", response_class=HTMLResponse)
def removals_page(request: Request, svc: Svc, name: str = Depends(editor)):
    return page("removals", request, editor=name, removals=_recent(svc))


@api.get("/removals", tags=["removals"])
def removals_json(svc: Svc, name: str = Depends(api_editor)) -> list[dict]:
    """The newest 200 removals: `kind` (feed, newsletter, account), `name`, `action` (disabled, enabled, archived,
    deleted), `by` whom, `at`, and `detail`: what it took along, in words."""
    return _recent(svc)
