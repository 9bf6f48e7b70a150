"""What every page and API route of the desk shares: who is asking, proof that a form came from us, and the
process's services as a FastAPI dependency (`svc: Svc`).

Pages: a signed session cookie (HttpOnly, SameSite=Lax, Secure when the site is https, path /desk) with an
absolute lifetime of SESSION_HOURS, good only while it carries the editor's current session version (signing
out and a new password move it on: every session of theirs ends); every POST carries the session's CSRF
token (a form field or the X-CSRF-Token header); failed sign-ins are limited per name and client address
(editors.sign_in).
API (/api/v1): an editor's own token as `Authorization: Bearer <token>`; no cookie, so no CSRF to guard.
"""

from __future__ import annotations

import hmac
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from syndicate import services
from syndicate.db import transaction
from syndicate.errors import InvalidInput
from syndicate.http import answers, api_tokens
from syndicate.models import Editor
from syndicate.templating import render

# The process's services (settings, database, mail transport) as each route's dependency: visible in its
# signature, and replaceable in a test with app.dependency_overrides[services.current]. Defined here, where
# the web app's routes reach it too (web/responses re-exports it): the desk may not import web.
Svc = Annotated[services.Services, Depends(services.current)]

SESSION_HOURS = 12  # then sign in again, however active the session was
COOKIE = "syndicate_desk"
pages = APIRouter(prefix="/desk", include_in_schema=False)
api = APIRouter(prefix="/api/v1", responses=answers.EDITOR_API)  # documented in /openapi.json
_bearer = HTTPBearer(auto_error=False, description="an editor's own API token (the desk's API tokens page, or "
                                                   "`syndicate token create NAME --editor USER`)")


class SignInRequired(Exception):
    """Raised by `editor` for a request without a valid session: a page answers with a redirect to sign in,
    a script's request (Accept: application/json) with 401."""

    def __init__(self, path: str, wants_json: bool = False):
        self.path, self.wants_json = path, wants_json


class CsrfRefused(Exception):
    """A POST without the session's CSRF token: refused with 403, nothing changed."""


def page(template: str, request: Request, status: int = 200, **context) -> HTMLResponse:
    """A desk page: templates/desk/<template>.html, given the CSRF token every form must carry and the
    editor's time zone (`desk_zone`, which templates/desk/macros.html's `when` shows times in)."""
    context.setdefault("desk_zone", editor_zone(request))
    return HTMLResponse(render(f"desk/{template}.html", csrf=csrf_token(request), **context), status_code=status)


def confirmation(request: Request, name: str, verb: str, plan, action: str, back_to: str, error: str | None = None,
                 status: int = 200) -> HTMLResponse:
    """The page that asks before something is removed: what it takes along (a removals.Plan), why it can't be
    done if it can't, and the button that posts to `action`."""
    return page("confirm", request, 400 if error and status == 200 else status, editor=name, verb=verb, plan=plan,
                action=action, back=back_to, error=error)


def ticked(value: str) -> bool:
    """A checkbox as a form sends it: present (any of the usual values) or not."""
    return value.strip().lower() in ("1", "on", "true", "yes")


def editor_zone(request: Request) -> ZoneInfo:
    """The zone the signed-in editor chose on their account page (kept in the session), else UTC."""
    return ZoneInfo(request.session.get("zone") or "UTC")


def csrf_token(request: Request) -> str:
    if "csrf" not in request.session:
        request.session["csrf"] = secrets.token_urlsafe(32)
    return request.session["csrf"]


async def csrf_checked(request: Request) -> None:
    """Every state-changing request of a page proves it came from our own page."""
    expected = request.session.get("csrf")
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        given = (await request.form()).get("csrf")
    if not expected or not isinstance(given, str) or not hmac.compare_digest(expected, given):
        raise CsrfRefused


def editor(request: Request, svc: Svc) -> str:
    """The signed-in editor's name; SignInRequired otherwise (no session, too old, ended by signing out or
    a new password, editor disabled)."""
    name, since = request.session.get("editor"), request.session.get("since", 0)
    wants_json = "application/json" in request.headers.get("accept", "")
    if not name or time.time() - since > SESSION_HOURS * 3600:
        request.session.clear()
        raise SignInRequired(request.url.path, wants_json)
    with transaction(svc.Session) as session:
        row = session.scalar(select(Editor).where(Editor.username == name, Editor.disabled_at.is_(None),
                                                  Editor.session_version == request.session.get("version", -1)))
    if row is None:
        request.session.clear()
        raise SignInRequired(request.url.path, wants_json)
    return name


def api_editor(svc: Svc, credentials: HTTPAuthorizationCredentials | None = Security(_bearer)) -> str:
    """The editor whose API token came with the request; NotAuthenticated (answered 401) otherwise."""
    with transaction(svc.Session) as session:
        return api_tokens.authenticate_editor(session, credentials.credentials if credentials else None).username


def client_address(request: Request) -> str:
    """Where the request came from, as the server sees it (behind a proxy: as the proxy headers say)."""
    return request.client.host if request.client else "unknown"


def back(to: str = "/desk") -> RedirectResponse:
    """After a form's POST: see the page again (303, so a reload doesn't post twice)."""
    return RedirectResponse(to, status_code=303)


def sign_in_redirect(path: str) -> RedirectResponse:
    return RedirectResponse(f"/desk/login?next={quote(path)}", status_code=303)


def local_time(text: str, zone: str) -> datetime:
    """A time an editor typed (a datetime-local field, or ISO 8601), in `zone` unless it names its own; as UTC
    (comparisons of times in a repeated hour across zones are never equal, PEP 495)."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{text!r} is not a date and time: use the picker, or write 2026-12-24T07:30") from None
    if at.tzinfo:
        return at.astimezone(UTC)
    # A wall-clock time the zone skips (clocks go forward) would silently become another hour: say so.
    # One it has twice (clocks go back) is the first of the two, as fold=0 means.
    local = at.replace(tzinfo=ZoneInfo(zone))
    if local.astimezone(UTC).astimezone(local.tzinfo).replace(tzinfo=None) != at:
        raise InvalidInput(f"{at:%Y-%m-%d %H:%M} doesn't exist in {zone}: the clocks go forward then; "
                           "choose a time an hour later")
    return local.astimezone(UTC)
