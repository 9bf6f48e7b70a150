"""One teaser: edited with a live count by its network's rules, scheduled, held, cancelled, re-shared."""

from __future__ import annotations

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.desk.core import (
    Svc,
    api,
    api_editor,
    back,
    csrf_checked,
    editor,
    editor_zone,
    local_time,
    page,
    pages,
)
from syndicate.errors import InvalidInput
from syndicate.models import RowId
from syndicate.social import accounts, networks, posts, retraction, teaser


@pages.get("/posts/{post_id}", response_class=HTMLResponse)
def post_page(request: Request, post_id: RowId, svc: Svc, name: str = Depends(editor), error: str | None = None):
    with transaction(svc.Session) as session:
        post = posts.by_id(session, post_id)
        record = posts.describe(post)
        network = accounts.settings_of(post.account).rules(post.account.network).display_name
    # Times typed here are in the editor's own zone, as everywhere else in the desk (the edition's send time).
    return page("post", request, editor=name, post=record, network=network, zone=editor_zone(request).key,
                error=error)


def _measure(session, post_id: int, text: str) -> dict:
    post = posts.by_id(session, post_id)
    rules = accounts.settings_of(post.account).rules(post.account.network)
    url = (post.payload or {}).get("url", post.article.url)
    try:
        teaser.measure(rules, text, url)
        problem = None
    except InvalidInput as e:
        problem = str(e)
    return dict(length=networks.length(rules, text), limit=rules.limit, ok=problem is None, problem=problem)


@pages.get("/posts/{post_id}/measure")
def measure(post_id: RowId, svc: Svc, text: str = "", name: str = Depends(editor)) -> dict:
    """The teaser's length by its network's own rules, for the counter under the text box."""
    with transaction(svc.Session) as session:
        return _measure(session, post_id, text)


def _act(session, settings: Settings, post_id: int, action: str, text: str = "", at: str = "",
         zone: str | None = None) -> dict:
    """One editor's action on a teaser; a time in `at` is read in `zone` (the desk: the editor's; the API:
    the account's) unless it names its own offset."""
    post = posts.by_id(session, post_id)
    zone = zone or accounts.settings_of(post.account).timezone
    if action == "save":
        posts.edit_text(post, text.replace("\r\n", "\n"))
    elif action == "schedule":
        posts.schedule(post, local_time(at, zone))
    elif action in ("hold", "release", "cancel"):
        {"hold": posts.hold, "release": posts.release, "cancel": posts.cancel}[action](post)
    elif action == "breaking":
        posts.make_breaking(post)
    elif action == "reshare":  # a new post of the same story on the same account, at `at` or at its pace
        when = local_time(at, zone) if at.strip() else None
        post = posts.reshare(session, post.article, post.account, when,
                             env_x=settings.x is not None)
    else:
        raise InvalidInput(f"no post action {action!r}: save, schedule, hold, release, cancel, breaking, reshare, "
                           "retract")
    session.flush()
    return posts.describe(post)


@pages.post("/posts/{post_id}", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def post_action(request: Request, post_id: RowId, svc: Svc, action: str = Form(...), text: str = Form(""),
                at: str = Form(""), name: str = Depends(editor)):
    if action == "retract":  # the network is called: outside any transaction of the desk's
        done = retraction.retract(svc.Session, svc.social_client, post_id, by=name)
        if not done.settled:  # still up, or left to the editor's hand: said on the page
            return post_page(request, post_id, svc, name, error=done.message)
        return back(f"/desk/posts/{post_id}")
    try:
        with transaction(svc.Session) as session:
            record = _act(session, svc.settings, post_id, action, text, at, zone=editor_zone(request).key)
    except InvalidInput as e:
        return post_page(request, post_id, svc, name, error=str(e))
    return back(f"/desk/posts/{record['id']}")


# ── the same, for scripts ────────────────────────────────────────────────────


class PostAction(BaseModel):
    action: str  # save | schedule | hold | release | cancel | breaking | reshare | retract
    text: str = ""  # for save: the new teaser
    at: str = ""  # for schedule: ISO 8601; without an offset, in the account's time zone


@api.get("/posts/{post_id}", tags=["social"])
def post_json(post_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """One teaser: its text, length by its network's rules, status, schedule, link card."""
    with transaction(svc.Session) as session:
        return posts.describe(posts.by_id(session, post_id))


@api.get("/posts/{post_id}/measure", tags=["social"])
def measure_json(post_id: RowId, svc: Svc, text: str = "", name: str = Depends(api_editor)) -> dict:
    """How long `text` would be on this teaser's network, and whether it may go as it is."""
    with transaction(svc.Session) as session:
        return _measure(session, post_id, text)


@api.post("/posts/{post_id}", tags=["social"])
def post_action_json(post_id: RowId, body: PostAction, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Edit, schedule, hold, release, cancel, make breaking, re-share (answers the new post) or retract a teaser
    (deleted on its network; `retraction` says what happened: retracted, by hand, cancelled, unchanged, busy
    or failed, and what to do)."""
    if body.action == "retract":
        done = retraction.retract(svc.Session, svc.social_client, post_id, by=name)
        with transaction(svc.Session) as session:
            return posts.describe(posts.by_id(session, post_id)) | dict(
                retraction=dict(outcome=done.outcome, message=done.message))
    with transaction(svc.Session) as session:
        return _act(session, svc.settings, post_id, body.action, body.text, body.at)
