"""Signing in and out of the desk; an editor's own API tokens and time zone."""

from __future__ import annotations

import secrets
import time
from zoneinfo import available_timezones

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from syndicate.db import transaction
from syndicate.desk import editors
from syndicate.desk.core import (
    SignInRequired,
    Svc,
    api,
    api_editor,
    back,
    client_address,
    csrf_checked,
    editor,
    page,
    pages,
)
from syndicate.errors import InvalidInput
from syndicate.http import api_tokens
from syndicate.services import Services


@pages.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/desk"):
    return page("login", request, next=_safe_next(next), error=None, username="")


@pages.post("/login", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def login(request: Request, svc: Svc, username: str = Form(""), password: str = Form(""), next: str = Form("/desk")):
    with transaction(svc.Session) as session:
        found, refusal = editors.sign_in(session, username, password, client_address(request))
        name, zone, version = (found.username, found.timezone, found.session_version) if found else (None,) * 3
    if name is None:
        return page("login", request, 401, next=_safe_next(next), error=refusal, username=username)
    request.session.clear()  # a new session at sign-in: a token planted before can't ride along
    request.session.update(editor=name, since=time.time(), csrf=secrets.token_urlsafe(32), zone=zone,
                           version=version)
    return back(_safe_next(next))


@pages.post("/logout", dependencies=[Depends(csrf_checked)])
def logout(request: Request, svc: Svc):
    """Signs this editor out everywhere: a copy of any of their session cookies is refused from now on."""
    try:
        name = editor(request, svc)
    except SignInRequired:
        name = None  # ended already: nothing more to end
    if name is not None:
        with transaction(svc.Session) as session:
            editors.end_sessions(editors.by_username(session, name))
    request.session.clear()
    return back("/desk/login")


def _safe_next(target: str) -> str:
    """Only back to a page of the desk: never a redirect to another site."""
    return target if target.startswith("/desk") and not target.startswith(("/desk//", "/desk\\")) else "/desk"


# ── your account: API tokens and time zone ───────────────────────────────────


def _tokens(session, name: str) -> list[dict]:
    return [dict(name=t.name, scopes=" ".join(api_tokens.scopes_of(t)), status="revoked" if t.revoked_at else "active",
                 created_at=t.created_at, last_used_at=t.last_used_at)
            for t in api_tokens.list_tokens(session, editors.by_username(session, name))]


def _account(request: Request, svc: Services, name: str, status: int = 200, **context) -> HTMLResponse:
    with transaction(svc.Session) as session:
        zone, tokens = editors.by_username(session, name).timezone or "UTC", _tokens(session, name)
    context = dict(created=None, error=None, notice=None) | context
    return page("account", request, status, editor=name, zone=zone, zones=sorted(available_timezones()),
                tokens=tokens, **context)


@pages.get("/account", response_class=HTMLResponse)
def account_page(request: Request, svc: Svc, name: str = Depends(editor), password: str | None = None):
    notice = "Password changed. Your other desk sessions were signed out." if password == "changed" else None
    return _account(request, svc, name, notice=notice)


@pages.post("/account/password", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def change_password(request: Request, svc: Svc, current: str = Form(""), password: str = Form(""),
                    again: str = Form(""), name: str = Depends(editor)):
    """A new password, given the current one: every other session of this editor ends, this one goes on."""
    with transaction(svc.Session) as session:
        me = editors.by_username(session, name)
        refusal = editors.change_password(session, me, current, password, again, client_address(request))
        session.flush()
        version = me.session_version
    if refusal:
        return _account(request, svc, name, 400, error=refusal)
    request.session["version"] = version  # a new cookie for this browser; copies of the old one are refused
    return back("/desk/account?password=changed")


@pages.post("/account/tokens", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def create_token(request: Request, svc: Svc, label: str = Form(""), name: str = Depends(editor)):
    """A new token, shown on this one answer only (it is stored as a hash). Its scope is desk:api, the only
    one an editor's token can have: a token made here can never push a story or post bounces."""
    created, error = None, None
    try:
        with transaction(svc.Session) as session:
            row, secret = api_tokens.create_token(session, f"{name}:{label.strip()}" if label.strip() else "",
                                                  editor=editors.by_username(session, name),
                                                  scopes=[api_tokens.EDITOR_SCOPE])
            created = dict(name=row.name, token=secret)
    except InvalidInput as e:
        error = str(e)
    return _account(request, svc, name, 400 if error else 200, created=created, error=error)


@pages.post("/account/tokens/revoke", dependencies=[Depends(csrf_checked)])
def revoke_token(svc: Svc, token_name: str = Form(...), name: str = Depends(editor)):
    with transaction(svc.Session) as session:
        if not any(t["name"] == token_name for t in _tokens(session, name)):
            raise InvalidInput(f"you have no token named {token_name!r}")
        api_tokens.revoke(session, token_name)
    return back("/desk/account")


@pages.post("/account/timezone", dependencies=[Depends(csrf_checked)])
def set_timezone(request: Request, svc: Svc, timezone: str = Form(...), name: str = Depends(editor)):
    with transaction(svc.Session) as session:
        editors.set_timezone(editors.by_username(session, name), timezone)
    request.session["zone"] = timezone
    return back("/desk/account")


class Me(BaseModel):
    username: str
    timezone: str


@api.get("/me", response_model=Me, tags=["account"])
def whoami(svc: Svc, name: str = Depends(api_editor)):
    """The editor this token belongs to, and the zone the desk shows times in."""
    with transaction(svc.Session) as session:
        return Me(username=name, timezone=editors.by_username(session, name).timezone or "UTC")
