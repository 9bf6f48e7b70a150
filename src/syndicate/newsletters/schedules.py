"""When a newsletter's regular editions go out: a cron expression in the newsletter's own time zone,
walked in local wall-clock time (DST-correct), and said in plain words for the desk."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syndicate.errors import InvalidInput
from syndicate.models import (
    Newsletter,
    Subscriber,
    Subscription,
    utcnow,
)


def check_schedule(cron: str | None, timezone: str) -> None:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise InvalidInput(f"unknown time zone {timezone!r}; use an IANA name like Europe/Berlin") from e
    if cron is None:
        return
    try:
        CronSim(cron, datetime.now(zone))
    except CronSimError as e:
        raise InvalidInput(f"bad cron expression {cron!r}: {e}; e.g. '0 7 * * *' for 07:00 daily") from e


def next_run(cron: str | None, timezone: str, after: datetime) -> datetime | None:
    """The next send time strictly after `after`, computed in local time (DST-correct), as UTC.

    cronsim walks local wall-clock time: 07:00 Europe/Berlin stays 07:00 on both sides of a
    switch, a time that doesn't exist that day (02:30 in spring) runs once at 03:00, and a
    time that happens twice (02:30 in autumn) runs once.
    """
    if cron is None:
        return None
    local = after.astimezone(ZoneInfo(timezone))
    return next(CronSim(cron, local)).astimezone(UTC)


def upcoming(newsletter: Newsletter, n: int = 5, after: datetime | None = None) -> list[datetime]:
    times, at = [], after or utcnow()
    while len(times) < n and (at := next_run(newsletter.cron, newsletter.timezone, at)) is not None:
        times.append(at)
    return times


def explain_schedule(cron: str | None, timezone: str) -> str:
    """A schedule in plain words, e.g. "At 07:00 on Monday through Friday, Europe/Berlin time"."""
    check_schedule(cron, timezone)
    if cron is None:
        return "No regular editions: only one-off and breaking ones"
    return f"{CronSim(cron, datetime.now(UTC)).explain()}, {timezone} time"


def check_time(at: datetime, now: datetime | None = None) -> None:
    """A send time an editor gives must be ahead: one in the past would go at once, a surprise to
    whoever typed it (a wrong year, day or zone)."""
    if at.tzinfo is None:
        raise InvalidInput("give the time with its zone, e.g. 2026-12-01T07:00+01:00")
    now = now or utcnow()
    if at < now.replace(second=0, microsecond=0):  # the minute it is still counts: typed as "now"
        zone = getattr(at.tzinfo, "key", None) or at.tzname()
        raise InvalidInput(f"{at:%Y-%m-%d %H:%M} {zone} is in the past (now: {now.astimezone(at.tzinfo):%Y-%m-%d %H:%M}"
                           f" {zone}); give a later time")


# ── at each reader's local time ──────────────────────────────────────────────

# The widest gap between two zones' clocks (UTC+14 to UTC-12): a reader's 07:00 can come this much before
# or after the newsletter's own.
WIDEST = timedelta(hours=26)


def wall_clock(day: date, clock: time, zone: str) -> datetime:
    """`clock` on `day` in `zone`, as UTC; DST-correct, and answering as the cron schedule does: a time that
    doesn't exist that day (02:30 when the clocks spring forward from 02:00 to 03:00) is the moment the clock
    jumps (03:00, new time); a time that happens twice (02:30 when they fall back) is the first of the two
    (summer time)."""
    tz = ZoneInfo(zone)
    local = datetime.combine(day, clock, tzinfo=tz)  # fold=0: the earlier of two, when ambiguous
    at = local.astimezone(UTC)
    if at.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None):
        return at
    # In the gap: fold=1 reads it with the offset after the jump, a moment before it. The jump is between.
    lo, hi = local.replace(fold=1).astimezone(UTC), at
    while hi - lo > timedelta(minutes=1):  # zones change their offset on a whole minute
        middle = lo + (hi - lo) / 2
        lo, hi = (lo, middle) if middle.astimezone(tz).utcoffset() == hi.astimezone(tz).utcoffset() else (middle, hi)
    return hi.replace(second=0, microsecond=0)  # lo < jump <= hi < jump + 1 minute


def local_slot(newsletter: Newsletter, slot: datetime) -> tuple[date, time]:
    """The wall-clock time a slot stands for: its date and time in the newsletter's own zone."""
    local = slot.astimezone(ZoneInfo(newsletter.timezone))
    return local.date(), local.time().replace(tzinfo=None)


def reader_zones(session: Session, newsletter: Newsletter) -> list[str]:
    """The zones of the newsletter's readers now (a reader without one reads in the newsletter's zone)."""
    zone = func.coalesce(Subscriber.timezone, newsletter.timezone)
    return sorted(session.scalars(
        select(zone).distinct().join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(Subscription.newsletter_id == newsletter.id, Subscription.status == "active",
               Subscriber.status == "confirmed")))


def first_wave(session: Session, newsletter: Newsletter, slot: datetime) -> datetime:
    """When a local-time newsletter's run for `slot` is due: the slot's wall-clock time in the first of its
    readers' zones to reach it (the newsletter's own zone when it has no reader yet). The edition is cut and
    rendered then, once, for everyone."""
    day, clock = local_slot(newsletter, slot)
    return min(wall_clock(day, clock, zone) for zone in reader_zones(session, newsletter) or [newsletter.timezone])


def starts_at(session: Session, newsletter: Newsletter) -> datetime | None:
    """When the newsletter's next regular run is due."""
    if newsletter.next_run_at is None or not newsletter.local_time:
        return newsletter.next_run_at
    return first_wave(session, newsletter, newsletter.next_run_at)
