"""Each account's pace: inside its posting window (in its own zone), a minimum gap after the previous post,
under its daily cap and any limit the network announced; the breaking lane first, then editors' scheduled
posts, then the newest stories. `dispatch` hands out at most one post per account per tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syndicate import ledger
from syndicate.config import Settings
from syndicate.models import Article, Post, SocialAccount, utcnow
from syndicate.social import accounts
from syndicate.social.accounts import AccountSettings
from syndicate.social.posts import withdrawn_reason


def next_slot(settings: AccountSettings, now: datetime, last_dispatched: datetime | None,
              recent: list[datetime], parked_until: datetime | None, windowed: bool = True) -> datetime:
    """The earliest time ≥ now the account may post: after the gap, under the daily cap, past any
    limit the network announced and, when `windowed`, inside the posting window."""
    at = now
    if last_dispatched is not None:
        at = max(at, last_dispatched + timedelta(seconds=settings.min_gap))
    if parked_until is not None:
        at = max(at, parked_until)
    in_day = sorted(t for t in recent if t > at - timedelta(hours=24))
    if len(in_day) >= settings.daily_cap:
        at = max(at, in_day[-settings.daily_cap] + timedelta(hours=24))
    return in_window(settings, at) if windowed else at


def in_window(settings: AccountSettings, at: datetime) -> datetime:
    """`at` if it falls in the posting window, else the window's next opening — in the account's zone,
    so "07:00" stays 07:00 local across daylight-saving changes."""
    hours = settings.hours
    if hours is None:
        return at
    start, end = hours
    zone = settings.zone
    local_day = at.astimezone(zone).date()
    openings = []
    for offset in (-1, 0, 1):
        day = local_day + timedelta(days=offset)
        opens = _utc(datetime.combine(day, start, tzinfo=zone))
        closes = _utc(datetime.combine(day + timedelta(days=1) if end <= start else day, end, tzinfo=zone))
        if opens <= at < closes:
            return at
        if at < opens:
            openings.append(opens)
    return min(openings)


def _utc(local: datetime) -> datetime:
    # A local time skipped by a spring-forward change is read with the offset before it (fold=0):
    # 02:30 on that night becomes 03:30, the first moment of the window that exists.
    return local.astimezone(UTC)


def recent_posts(session: Session, account: SocialAccount, now: datetime) -> list[datetime]:
    """When the account posted in the last 24 hours (a post taken back since counts: the network counted it),
    and the posts in flight (counted as now)."""
    posted = session.scalars(select(Post.posted_at).where(
        Post.account_id == account.id, Post.posted_at > now - timedelta(hours=24),
        Post.status.in_(("posted", "ambiguous", "retracted")))).all()
    flying = session.scalar(select(func.count()).where(Post.account_id == account.id, Post.status == "sending"))
    return list(posted) + [now] * (flying or 0)


def queue(session: Session, account: SocialAccount) -> list[Post]:
    """The account's waiting posts in the order they go: breaking lane first, then editors' scheduled
    ones by their time, then the newest stories first."""
    rows = session.scalars(
        select(Post).join(Article).where(Post.account_id == account.id, Post.status == "pending")
        .order_by((Post.lane == "breaking").desc(), Post.scheduled_at.is_(None), Post.scheduled_at,
                  Article.published_at.desc(), Post.id)
    ).all()
    return list(rows)


def too_old(post: Post, settings: AccountSettings, now: datetime) -> bool:
    """A story that waited past the account's max age is not news any more; an editor's schedule is kept."""
    if post.scheduled_at is not None or post.share > 0 or not settings.max_age:
        return False
    return post.article.published_at < now - timedelta(seconds=settings.max_age)


def dispatch(session: Session, settings: Settings, now: datetime | None = None) -> list[int]:
    """The tick: posts whose worker died go back, those of a withdrawn story are skipped; then at most one
    post per account, when its pace allows. Each one returned is leased (settings.leases.requeue) so the next
    tick doesn't queue it again."""
    now, leases = now or utcnow(), settings.leases
    # A claim nobody refreshed: its worker died mid-attempt, which may have reached the network (X keeps no
    # idempotency key): a "duplicate" answer to the next attempt then means it went out.
    ledger.revive(session, Post, now, leases, next_attempt_at=now, uncertain=True)
    # A story withdrawn since its post was planned (or while its worker was away): that post never goes.
    for post in session.scalars(select(Post).join(Article).where(Post.status == "pending",
                                                                 Article.withdrawn_at.is_not(None))):
        post.status, post.error = "skipped", withdrawn_reason(post.article)
    if accounts.social_paused(session):
        return []
    ids = []
    for account in session.scalars(select(SocialAccount).where(SocialAccount.status == "active")).all():
        post = _next_for(session, account, now)
        if post is not None:
            post.next_attempt_at, post.planned_at = now + leases.requeue, now
            account.last_dispatched_at = now
            ids.append(post.id)
    return ids


def _next_for(session: Session, account: SocialAccount, now: datetime) -> Post | None:
    settings = accounts.settings_of(account)
    recent = recent_posts(session, account, now)
    anytime = next_slot(settings, now, account.last_dispatched_at, recent, account.parked_until, windowed=False)
    if anytime > now:
        return None
    windowed = in_window(settings, now) <= now
    for post in queue(session, account):
        if post.next_attempt_at is not None and post.next_attempt_at > now:
            continue  # leased to a task already, or waiting out a retry
        if post.scheduled_at is not None and post.scheduled_at > now:
            continue
        # The window is for the regular flow; breaking news and an editor's chosen time go when due.
        if not windowed and post.lane != "breaking" and post.scheduled_at is None:
            continue
        if too_old(post, settings, now):
            post.status = "skipped"
            post.error = (f"not posted: the story was {_age(now - post.article.published_at)} old when its turn "
                          f"came (this account's max age is {_age(timedelta(seconds=settings.max_age))})")
            continue
        return post
    return None


def projected(session: Session, account: SocialAccount, now: datetime | None = None,
              skip_too_old: bool = True) -> list[tuple[Post, datetime]]:
    """When each waiting post is expected to go, at the account's pace (for the queue and dry runs), in the
    order the tick will send them: as `_next_for` does, a post scheduled later (or waiting out a retry) lets
    the others go before it, and takes the first slot from its own time. One that will be too old by its
    turn is left out (the tick skips it, with the reason), unless not `skip_too_old`."""
    now = now or utcnow()
    settings = accounts.settings_of(account)
    recent, last = recent_posts(session, account, now), account.last_dispatched_at
    waiting = queue(session, account)  # in the tick's order of preference
    plan_ = []
    while waiting:
        # Each post's first slot from where it may go; the earliest goes, the queue's order breaking ties.
        # (Posts with the same floor and window share a slot: the head of the queue takes it.)
        slots = {}
        for post in waiting:
            floor = max(now, post.scheduled_at or now, post.next_attempt_at or now)
            key = (floor, post.lane != "breaking" and post.scheduled_at is None)
            if key not in slots:
                slots[key] = next_slot(settings, floor, last, recent, account.parked_until, windowed=key[1])
        at = min(slots.values())
        post = next(p for p in waiting if slots[(max(now, p.scheduled_at or now, p.next_attempt_at or now),
                                                 p.lane != "breaking" and p.scheduled_at is None)] <= at)
        waiting.remove(post)
        if skip_too_old and too_old(post, settings, at):
            continue  # it will be skipped when its turn comes: it takes no slot
        plan_.append((post, at))
        last = at
        recent.append(at)
    return plan_


def queues(session: Session, now: datetime | None = None,
           skip_too_old: bool = True) -> list[tuple[SocialAccount, list[tuple[Post, datetime]]]]:
    """Every account, by name, with its waiting posts at the times its pace expects them (`projected`):
    the social status, as `syndicate social status`, the desk's Today page and its calendar show it."""
    return [(account, projected(session, account, now, skip_too_old)) for account in accounts.all_accounts(session)]


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours >= 1 else f"{delta.total_seconds() / 60:.0f} min"
