"""Today: the calendar of the next days — editions, the sends each schedule will make, teasers — with
the social kill switch, the tables of what is scheduled and queued, and the accounts."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from zoneinfo import ZoneInfo

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.desk import agenda, editors
from syndicate.desk.core import Svc, api, api_editor, back, csrf_checked, editor, editor_zone, page, pages
from syndicate.errors import InvalidInput
from syndicate.models import Edition, Post, utcnow
from syndicate.newsletters import stored
from syndicate.social import accounts, pace, posts


def _today(session, settings: Settings, now) -> dict:
    upcoming = session.scalars(select(Edition).where(Edition.status.in_(("scheduled", "sending", "paused")))
                               .order_by(Edition.scheduled_for)).all()
    # An edition no reader got, this past week: first, with why (deliveries._close), until an editor resends.
    failed = session.scalars(select(Edition).where(Edition.status == "failed",
                                                   Edition.sent_at > now - timedelta(days=7))
                             .order_by(Edition.sent_at.desc())).all()
    edition_rows = [dict(id=e.id, newsletter=e.newsletter.name, number=e.number, status=e.status,
                         subject=e.subject, at=e.sent_at if e.status == "failed" else e.scheduled_for, note=e.note)
                    for e in [*failed, *upcoming]]
    account_rows, queue = [], []
    for account, waiting in pace.queues(session, now):
        account_rows.append(accounts.describe(account, settings.x is not None))
        queue += [posts.describe(post, at) for post, at in waiting]
    queue.sort(key=lambda p: p["planned_at"])
    held = [posts.describe(p) for p in session.scalars(select(Post).where(Post.status == "held"))]
    recent = [posts.describe(p) for p in session.scalars(
        select(Post).where(Post.posted_at > now - timedelta(days=1)).order_by(Post.posted_at.desc()))]
    # Mail without a postal address breaks bulk-mail rules (CAN-SPAM): said on the first page editors open.
    no_postal_address = [dict(slug=n.slug, name=n.name, link=f"/desk/newsletters/{n.slug}#postal")
                         for n in stored.without_postal_address(session, settings)]
    return dict(paused=accounts.social_paused(session), editions=edition_rows, accounts=account_rows,
                queue=queue, held=held, recent=recent, no_postal_address=no_postal_address)


@pages.get("", response_class=HTMLResponse)
def today(request: Request, svc: Svc, name: str = Depends(editor), days: int = 7):
    now, zone = utcnow(), editor_zone(request)
    with transaction(svc.Session) as session:
        context = _today(session, svc.settings, now)
        calendar = agenda.by_day(agenda.calendar(session, now, days, zone), now, days, zone)
    return page("today", request, editor=name, now=now, calendar=calendar, days=days, **context)


@pages.post("/social/pause", dependencies=[Depends(csrf_checked)])
def social_pause(svc: Svc, name: str = Depends(editor), reason: str = Form("")):
    with transaction(svc.Session) as session:
        accounts.pause_social(session, reason.strip() or f"paused by {name}")
    return back()


@pages.post("/social/resume", dependencies=[Depends(csrf_checked)])
def social_resume(svc: Svc, name: str = Depends(editor)):
    with transaction(svc.Session) as session:
        accounts.resume_social(session)
    return back()


@pages.post("/accounts/{account_name}/{action}", dependencies=[Depends(csrf_checked)])
def account_action(account_name: str, action: str, svc: Svc, name: str = Depends(editor)):
    with transaction(svc.Session) as session:
        _account_action(session, svc.settings, account_name, action, name)
    return back()


def _account_action(session, settings: Settings, account_name: str, action: str, name: str) -> dict:
    account = accounts.by_name(session, account_name)
    if action == "pause":
        accounts.pause(account, f"paused by {name}")
    elif action == "resume":
        accounts.resume(account)
    elif action in ("images-on", "images-off"):  # from the next planned post on
        accounts.edit(session, settings.secret_key, account, {"images": action == "images-on"})
    else:
        raise InvalidInput(f"no account action {action!r}: pause, resume, images-on or images-off")
    return accounts.describe(account, settings.x is not None)


# ── the same, for scripts ────────────────────────────────────────────────────


@api.get("/today", tags=["today"])
def today_json(svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Editions scheduled, sending or paused; the social queue with each teaser's expected time; held
    teasers; accounts; what was posted in the last 24 hours; whether the kill switch is on."""
    with transaction(svc.Session) as session:
        context = _today(session, svc.settings, utcnow())
    paused = context.pop("paused")
    return dict(social_paused=bool(paused), social_paused_reason=paused.reason if paused else None, **context)


@api.get("/calendar", tags=["calendar"])
def calendar_json(svc: Svc, days: int = 7, name: str = Depends(api_editor)) -> dict:
    """Everything that goes out today and in the next days (`days` in all, whole days in your time zone):
    editions with their status, the sends each newsletter's schedule will make (`projected`: not cut yet),
    and teasers at the time their account's pace expects them, or when they went; sorted by time."""
    now = utcnow()
    with transaction(svc.Session) as session:
        zone = ZoneInfo(editors.by_username(session, name).timezone or "UTC")
        entries = agenda.calendar(session, now, days, zone)
    start, end = agenda.window(now, days, zone)
    return {"zone": zone.key, "from": start, "until": end, "entries": [asdict(e) for e in entries]}


@api.post("/social/{action}", tags=["social"])
def social_switch(action: str, svc: Svc, reason: str = "", name: str = Depends(api_editor)) -> dict:
    """The kill switch: `pause` stops every post on every account (queues keep filling); `resume`."""
    with transaction(svc.Session) as session:
        if action == "pause":
            accounts.pause_social(session, reason.strip() or f"paused by {name}")
        elif action == "resume":
            accounts.resume_social(session)
        else:
            raise InvalidInput(f"no social action {action!r}: pause or resume")
        return dict(social_paused=accounts.social_paused(session) is not None)


@api.post("/accounts/{account_name}/{action}", tags=["social"])
def account_action_json(account_name: str, action: str, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Pause or resume one account, or turn its pictures on or off (`images-on`, `images-off`)."""
    with transaction(svc.Session) as session:
        return _account_action(session, svc.settings, account_name, action, name)
