"""The editors' desk: signed-in pages to watch and steer what goes out. It calls the same domain
functions as the CLI and adds no logic of its own.

Security: a signed session cookie (HttpOnly, SameSite=Lax, Secure when the site is https), an absolute
lifetime of SESSION_HOURS; every POST carries the session's CSRF token (a form field or the
X-CSRF-Token header); sign-in attempts are limited per name and per address (editors.sign_in).
"""

from __future__ import annotations

import hmac
import secrets
import time
from datetime import timedelta
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy import select

from syndicate import accounts, editions, editors, posts, services, teaser
from syndicate.db import transaction
from syndicate.errors import InvalidInput
from syndicate.models import Edition, Editor, Post, SocialAccount, utcnow
from syndicate.templating import render

SESSION_HOURS = 12  # then sign in again, however active the session was
COOKIE = "syndicate_desk"
router = APIRouter(prefix="/desk", include_in_schema=False)


class SignInRequired(Exception):
    """Raised by `editor` for a request without a valid session: answered with a redirect to sign in."""

    def __init__(self, path: str):
        self.path = path


class CsrfRefused(Exception):
    """A POST without the session's CSRF token: refused with 403, nothing changed."""


def page(template: str, request: Request, status: int = 200, **context) -> HTMLResponse:
    return HTMLResponse(render(f"desk/{template}.html", csrf=csrf_token(request), **context), status_code=status)


def csrf_token(request: Request) -> str:
    if "csrf" not in request.session:
        request.session["csrf"] = secrets.token_urlsafe(32)
    return request.session["csrf"]


async def csrf_checked(request: Request) -> None:
    """Every state-changing request proves it came from our own page."""
    expected = request.session.get("csrf")
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        given = (await request.form()).get("csrf")
    if not expected or not isinstance(given, str) or not hmac.compare_digest(expected, given):
        raise CsrfRefused


def editor(request: Request) -> str:
    """The signed-in editor's name; SignInRequired otherwise (no session, too old, editor disabled)."""
    name, since = request.session.get("editor"), request.session.get("since", 0)
    if not name or time.time() - since > SESSION_HOURS * 3600:
        request.session.clear()
        raise SignInRequired(request.url.path)
    with transaction(services.current().Session) as session:
        row = session.scalar(select(Editor).where(Editor.username == name, Editor.disabled_at.is_(None)))
    if row is None:
        request.session.clear()
        raise SignInRequired(request.url.path)
    return name


def back(to: str = "/desk") -> RedirectResponse:
    return RedirectResponse(to, status_code=303)


# ── signing in and out ───────────────────────────────────────────────────────


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/desk"):
    return page("login", request, next=_safe_next(next), error=None, username="")


@router.post("/login", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def login(request: Request, username: str = Form(""), password: str = Form(""), next: str = Form("/desk")):
    address = request.client.host if request.client else "unknown"
    with transaction(services.current().Session) as session:
        found, refusal = editors.sign_in(session, username, password, address)
        name = found.username if found else None
    if name is None:
        return page("login", request, 401, next=_safe_next(next), error=refusal, username=username)
    request.session.clear()  # a new session at sign-in: a token planted before can't ride along
    request.session.update(editor=name, since=time.time(), csrf=secrets.token_urlsafe(32))
    return back(_safe_next(next))


@router.post("/logout", dependencies=[Depends(csrf_checked)])
def logout(request: Request):
    request.session.clear()
    return back("/desk/login")


def _safe_next(target: str) -> str:
    """Only back to a page of the desk: never a redirect to another site."""
    return target if target.startswith("/desk") and not target.startswith("/desk//") else "/desk"


# ── today: what goes out next, and the switches ──────────────────────────────


@router.get("", response_class=HTMLResponse)
def today(request: Request, name: str = Depends(editor)):
    now = utcnow()
    with transaction(services.current().Session) as session:
        paused = accounts.social_paused(session)
        upcoming = session.scalars(
            select(Edition).where(Edition.status.in_(("scheduled", "sending", "paused")))
            .order_by(Edition.scheduled_for)).all()
        edition_rows = [dict(id=e.id, newsletter=e.newsletter.name, number=e.number, status=e.status,
                             subject=e.subject, at=e.scheduled_for) for e in upcoming]
        account_rows, queue = [], []
        for account in session.scalars(select(SocialAccount).order_by(SocialAccount.name)):
            account_rows.append(accounts.describe(account, services.current().settings.x is not None))
            for post, at in posts.projected(session, account, now):
                queue.append(posts.describe(post, at))
        held = [posts.describe(p) for p in session.scalars(select(Post).where(Post.status == "held"))]
        recent = [posts.describe(p) for p in session.scalars(
            select(Post).where(Post.posted_at > now - timedelta(days=1)).order_by(Post.posted_at.desc()))]
    queue.sort(key=lambda p: p["planned_at"])
    return page("today", request, editor=name, paused=paused, editions=edition_rows, accounts=account_rows,
                queue=queue, held=held, recent=recent, now=now)


@router.post("/social/pause", dependencies=[Depends(csrf_checked)])
def social_pause(name: str = Depends(editor), reason: str = Form("")):
    with transaction(services.current().Session) as session:
        accounts.pause_social(session, reason.strip() or f"paused by {name}")
    return back()


@router.post("/social/resume", dependencies=[Depends(csrf_checked)])
def social_resume(name: str = Depends(editor)):
    with transaction(services.current().Session) as session:
        accounts.resume_social(session)
    return back()


@router.post("/accounts/{account_name}/{action}", dependencies=[Depends(csrf_checked)])
def account_action(account_name: str, action: str, name: str = Depends(editor)):
    with transaction(services.current().Session) as session:
        account = accounts.get(session, account_name)
        if action == "pause":
            accounts.pause(account, f"paused by {name}")
        elif action == "resume":
            accounts.resume(account)
        else:
            raise InvalidInput(f"no account action {action!r}")
    return back()


@router.post("/editions/{edition_id}/{action}", dependencies=[Depends(csrf_checked)])
def edition_action(edition_id: int, action: str, name: str = Depends(editor)):
    from syndicate.tasks import deliver_batch

    svc = services.current()
    batches = []
    with transaction(svc.Session) as session:
        edition = session.get(Edition, edition_id)
        if edition is None:
            raise InvalidInput(f"no edition {edition_id}")
        if action == "pause":
            editions.pause(session, edition)
        elif action == "resume":
            batches = editions.resume(session, edition, svc.settings)
        else:
            raise InvalidInput(f"no edition action {action!r}")
    for batch in batches:  # after the commit: a worker must find the rows sending
        deliver_batch.delay(*batch)
    return back()


# ── one post: its teaser, edited with a live count ───────────────────────────


@router.get("/posts/{post_id}", response_class=HTMLResponse)
def post_page(request: Request, post_id: int, name: str = Depends(editor), error: str | None = None):
    with transaction(services.current().Session) as session:
        post = posts.get(session, post_id)
        record = posts.describe(post)
        rules = accounts.settings_of(post.account).rules(post.account.network)
        zone = accounts.settings_of(post.account).timezone
    return page("post", request, editor=name, post=record, network=rules.display_name, zone=zone, error=error)


@router.get("/posts/{post_id}/measure")
def measure(post_id: int, text: str = "", name: str = Depends(editor)):
    """The teaser's length by its network's own rules, for the counter under the text box."""
    with transaction(services.current().Session) as session:
        post = posts.get(session, post_id)
        rules = accounts.settings_of(post.account).rules(post.account.network)
        url = (post.payload or {}).get("url", post.article.url)
    count = teaser.length(rules, text)
    try:
        teaser.measure(rules, text, url)
        problem = None
    except InvalidInput as e:
        problem = str(e)
    return JSONResponse(dict(length=count, limit=rules.limit, ok=problem is None, problem=problem))


@router.post("/posts/{post_id}", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def post_action(request: Request, post_id: int, action: str = Form(...), text: str = Form(""),
                at: str = Form(""), name: str = Depends(editor)):
    try:
        with transaction(services.current().Session) as session:
            post = posts.get(session, post_id)
            if action == "save":
                posts.edit_text(post, text.replace("\r\n", "\n"))
            elif action == "schedule":
                posts.schedule(post, _local_time(at, accounts.settings_of(post.account).timezone))
            elif action in ("hold", "release", "cancel"):
                {"hold": posts.hold, "release": posts.release, "cancel": posts.cancel}[action](post)
            else:
                raise InvalidInput(f"no post action {action!r}")
    except InvalidInput as e:
        return post_page(request, post_id, name, error=str(e))
    return back(f"/desk/posts/{post_id}")


def _local_time(text: str, zone: str):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{text!r} is not a date and time") from None
    return at if at.tzinfo else at.replace(tzinfo=ZoneInfo(zone))


def sign_in_redirect(path: str) -> RedirectResponse:
    return RedirectResponse(f"/desk/login?next={quote(path)}", status_code=303)
