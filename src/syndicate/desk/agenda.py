"""The calendar: everything that goes out in the next days — editions and teasers — in one sorted list.

Three sources, one list of entries:
  editions      cut already: scheduled, sending, paused, sent, cancelled, skipped — at their time;
  projections   the sends each newsletter's schedule will make and has not cut yet (`projected`). An
                edition already made for a slot takes that slot's place, as the beat tick takes it;
  teasers       waiting ones at the time their account's pace expects them (pace.projected), held and
                in-flight ones, and those that went out (or failed) in the range.

The range is whole days in the reader's zone: from midnight today to midnight `days` days later, so a
day heading holds a whole day. Editions and teasers still open from before it are today's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from syndicate.errors import InvalidInput
from syndicate.models import Edition, Newsletter, Post, utcnow
from syndicate.newsletters.schedules import next_run
from syndicate.social import accounts, pace

MAX_DAYS = 31
# A schedule every few minutes would otherwise fill the calendar with thousands of projections.
PER_SCHEDULE = 200
OPEN_EDITIONS = ("scheduled", "sending", "paused")
DONE_TEASERS = ("posted", "ambiguous", "failed", "retracted")  # a retracted one did go out, then


@dataclass(frozen=True)
class Entry:
    kind: str  # edition | teaser
    when: datetime  # UTC
    status: str  # the edition's or post's own status; "paused" where a pause stops it from going
    title: str  # an edition's subject ("next edition" while not cut); a teaser's text
    source: str  # who sends it: "The Morning Briefing #12", or the social account's name
    link: str  # the desk page to act on it
    projected: bool = False  # not cut yet: the newsletter's schedule makes it then, of the stories new by then
    id: int | None = None  # the edition's or post's id; None for a projection
    newsletter: str | None = None  # the newsletter's slug, for an edition
    account: str | None = None  # the account's name, for a teaser
    note: str | None = None  # what the editor should know: why it won't go, why it was skipped


@dataclass(frozen=True)
class Day:
    date: date  # in the reader's zone
    entries: list[Entry]


def window(now: datetime, days: int, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Midnight today in `zone` to midnight `days` days later, in UTC."""
    today = now.astimezone(zone).date()
    start = datetime.combine(today, time(), zone)
    end = datetime.combine(today + timedelta(days=days), time(), zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def calendar(session: Session, now: datetime | None = None, days: int = 7, zone: ZoneInfo = ZoneInfo("UTC")
             ) -> list[Entry]:
    """Everything that goes out (or went out) today and in the following days, sorted by time."""
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"the calendar shows 1 to {MAX_DAYS} days, not {days}")
    now = now or utcnow()
    start, end = window(now, days, zone)
    entries = _editions(session, now, start, end) + _projections(session, now, start, end) + _teasers(
        session, now, start, end)
    # At the same minute, editions before teasers: the order a reader of the day expects.
    return sorted(entries, key=lambda e: (e.when, e.kind != "edition", e.title))


def by_day(entries: list[Entry], now: datetime, days: int, zone: ZoneInfo) -> list[Day]:
    """The entries under each day of the range in `zone`, days with nothing included (they say so)."""
    today = now.astimezone(zone).date()
    grouped: dict[date, list[Entry]] = {today + timedelta(days=n): [] for n in range(days)}
    for entry in entries:
        # Open since an earlier day (a send still going, a paused edition): it is today's business.
        grouped[max(entry.when.astimezone(zone).date(), today)].append(entry)
    return [Day(day, found) for day, found in grouped.items()]


def _editions(session: Session, now: datetime, start: datetime, end: datetime) -> list[Entry]:
    rows = session.scalars(select(Edition).where(
        Edition.status != "draft", Edition.scheduled_for < end,
        or_(Edition.scheduled_for >= start, Edition.status.in_(OPEN_EDITIONS)),
        # Prepared with nothing in it for a slot still to come: the tick cuts again then (its projection stays).
        or_(Edition.status != "skipped", Edition.scheduled_for <= now))).all()
    return [Entry(kind="edition", when=e.scheduled_for, status=e.status, title=e.subject or e.newsletter.name,
                  source=f"{e.newsletter.name} #{e.number}", link=f"/desk/editions/{e.id}", id=e.id,
                  newsletter=e.newsletter.slug, note=e.note) for e in rows]


def _taken(session: Session, start: datetime, end: datetime) -> set[tuple[int, datetime]]:
    """The slots an edition was already made for: the tick starts that edition (or leaves it, paused or
    cancelled) instead of cutting one. A skipped one doesn't count: the tick cuts again. (run_regular)"""
    # By the slot an edition stands for, not its time: one prepared and then rescheduled still takes it.
    rows = session.execute(select(Edition.newsletter_id, Edition.slot).where(
        Edition.slot.is_not(None), Edition.status != "skipped", Edition.slot >= start, Edition.slot < end)).all()
    return {(newsletter_id, at) for newsletter_id, at in rows}


def _projections(session: Session, now: datetime, start: datetime, end: datetime) -> list[Entry]:
    taken = _taken(session, start, end)
    entries = []
    for newsletter in session.scalars(select(Newsletter).where(Newsletter.cron.is_not(None))):
        active = newsletter.status == "active"
        # The tick goes by next_run_at; a paused newsletter shows the slots resuming it now would keep.
        slot = newsletter.next_run_at if active and newsletter.next_run_at else next_run(
            newsletter.cron, newsletter.timezone, now)
        for _ in range(PER_SCHEDULE):
            if slot is None or slot >= end:
                break
            if slot >= start and (newsletter.id, slot) not in taken:
                entries.append(Entry(
                    kind="edition", when=slot, status="scheduled" if active else "paused", title="next edition",
                    source=newsletter.name, link=f"/desk/newsletters/{newsletter.slug}", projected=True,
                    newsletter=newsletter.slug,
                    note="not cut yet: made at this time from the stories new by then" if active
                    else "the newsletter is paused: nothing goes until it is resumed"))
            slot = next_run(newsletter.cron, newsletter.timezone, slot)
    return entries


def _teaser(post: Post, when: datetime, status: str | None = None, note: str | None = None) -> Entry:
    return Entry(kind="teaser", when=when, status=status or post.status, title=post.text, source=post.account.name,
                 link=f"/desk/posts/{post.id}", id=post.id, account=post.account.name, note=note or post.error)


def _teasers(session: Session, now: datetime, start: datetime, end: datetime) -> list[Entry]:
    entries = []
    kill_switch = accounts.social_paused(session)
    for account, waiting in pace.queues(session, now):
        stopped = (f"all social posting is paused: {kill_switch.reason}" if kill_switch
                   else f"the account is paused: {account.paused_reason}" if account.status == "paused" else None)
        for post, at in waiting:
            if at < end:
                entries.append(_teaser(post, at, "paused" if stopped else None, stopped))
    for post in session.scalars(select(Post).where(Post.status == "held")):
        # A held teaser has no turn until released: shown today, or at the time an editor chose.
        at = post.scheduled_at if post.scheduled_at and post.scheduled_at > now else now
        if at < end:
            entries.append(_teaser(post, at, note="held: it goes at its turn once released"))
    for post in session.scalars(select(Post).where(Post.status == "sending")):
        entries.append(_teaser(post, post.claimed_at or now))
    # A failed post has no posted_at: its last attempt is when it was claimed.
    went = session.scalars(select(Post).where(Post.status.in_(DONE_TEASERS), or_(
        Post.posted_at.between(start, end), and_(Post.posted_at.is_(None), Post.claimed_at.between(start, end)))))
    entries += [_teaser(post, post.posted_at or post.claimed_at) for post in went]
    return entries
