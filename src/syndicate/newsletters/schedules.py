"""When a newsletter's regular editions go out: a cron expression in the newsletter's own time zone,
walked in local wall-clock time (DST-correct), and said in plain words for the desk."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from syndicate.errors import InvalidInput
from syndicate.models import (
    Newsletter,
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
