"""An edition at each reader's local time: one cut, one render, its deliveries sent in waves.

A newsletter with `local_time` sends its regular edition of a slot (07:00 on 29 March, say, from its cron in its
own zone) at that wall-clock time in each reader's zone. The edition is cut and rendered once, when the first
reader's zone reaches it (schedules.first_wave); the fan-out writes the row of a reader whose 07:00 is still
ahead as waiting (status `waiting`, next_attempt_at their moment) in the same INSERT … SELECT that makes every
row (`later`, `columns`), each wave's rows on consecutive ids, so a wave's batches are short id ranges of its
own. The tick makes a waiting row pending when its moment comes and hands its batch to a worker, as for a
deferred row (deliveries.requeue); the edition stays `sending` until its last wave is done. A pause holds
waiting rows (the tick wakes only a sending edition's), a cancel skips them, an unsubscribe skips the reader's,
and a reader who changes their zone meanwhile is sent at the time in their new one (`rezone`).

A wave is the readers of one due instant: zones that share the clock that day share a wave."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, literal, select
from sqlalchemy.orm import Session

from syndicate.models import Delivery, Edition, Newsletter, Subscriber, UTCDateTime
from syndicate.newsletters import schedules


def in_waves(edition: Edition, newsletter: Newsletter) -> bool:
    """Whether an edition goes at each reader's local time: a local-time newsletter's regular run. A breaking
    story or an editor's one-off goes to everyone at its moment."""
    return newsletter.local_time and edition.kind == "regular" and edition.slot is not None


def reader_zone(newsletter: Newsletter):
    """A reader's zone, in a query over Subscriber: their own, or the newsletter's."""
    return func.coalesce(Subscriber.timezone, newsletter.timezone)


def _moments(session: Session, edition: Edition, newsletter: Newsletter) -> dict[str, datetime]:
    """Each zone among the edition's recipients, and its moment: the slot's wall-clock time there."""
    day, clock = schedules.local_slot(newsletter, edition.slot)
    zones = session.scalars(select(reader_zone(newsletter)).distinct()
                            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                            .where(Delivery.edition_id == edition.id))
    return {zone: schedules.wall_clock(day, clock, zone) for zone in zones}


def later(session: Session, edition: Edition, newsletter: Newsletter, now: datetime) -> dict[str, datetime]:
    """At the fan-out: each zone among the newsletter's readers whose moment for the edition's slot is still
    ahead, with that moment; {} for an edition that goes to everyone at once."""
    if not in_waves(edition, newsletter):
        return {}
    day, clock = schedules.local_slot(newsletter, edition.slot)
    moments = {zone: schedules.wall_clock(day, clock, zone) for zone in schedules.reader_zones(session, newsletter)}
    return {zone: at for zone, at in moments.items() if at > now}


def columns(newsletter: Newsletter, ahead: dict[str, datetime], now: datetime):
    """A new row's status and next_attempt_at, by its reader's zone (in a query over Subscriber): waiting
    for their moment in a zone of `ahead` (from `later`), pending now in any other."""
    now_ = literal(now, UTCDateTime())
    if not ahead:
        return literal("pending"), now_
    zone = reader_zone(newsletter)
    return (case({z: literal("waiting") for z in ahead}, value=zone, else_=literal("pending")),
            case({z: literal(at, UTCDateTime()) for z, at in ahead.items()}, value=zone, else_=now_))


def rezone(session: Session, subscriber_id: int, now: datetime) -> int:
    """A reader changed their zone: each of their rows still waiting for a wave waits for the slot's time in
    the new zone instead (at once, if that time has passed there). How many rows moved."""
    moved = 0
    for delivery, edition, newsletter, own in session.execute(
            select(Delivery, Edition, Newsletter, Subscriber.timezone)
            .join(Edition, Edition.id == Delivery.edition_id).join(Newsletter, Newsletter.id == Edition.newsletter_id)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.subscriber_id == subscriber_id, Delivery.status == "waiting")):
        if not in_waves(edition, newsletter):
            continue
        day, clock = schedules.local_slot(newsletter, edition.slot)
        at = max(schedules.wall_clock(day, clock, own or newsletter.timezone), now)
        if delivery.next_attempt_at != at:
            delivery.next_attempt_at, moved = at, moved + 1
    return moved


@dataclass
class Wave:
    at: datetime  # the moment, UTC
    zones: list[str] = field(default_factory=list)
    readers: int = 0
    waiting: int = 0  # of them, still waiting for it

    @property
    def done(self) -> bool:
        return not self.waiting


def waves(session: Session, edition: Edition) -> list[Wave]:
    """An edition's waves in order, each with its zones and how many of its readers still wait; [] for an
    edition that goes to everyone at once."""
    newsletter = session.get(Newsletter, edition.newsletter_id)
    if not in_waves(edition, newsletter) or edition.started_at is None:
        return []
    moments = _moments(session, edition, newsletter)
    found: dict[datetime, Wave] = {}
    for own, status, n in session.execute(  # grouped by the column: PostgreSQL takes no bound value there
            select(Subscriber.timezone, Delivery.status, func.count())
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.edition_id == edition.id).group_by(Subscriber.timezone, Delivery.status)):
        zone = own or newsletter.timezone
        wave = found.setdefault(moments[zone], Wave(moments[zone]))
        if zone not in wave.zones:
            wave.zones.append(zone)
        wave.readers += n
        wave.waiting += n if status == "waiting" else 0
    for wave in found.values():
        wave.zones.sort()
    return [found[at] for at in sorted(found)]


def next_wave(session: Session, edition: Edition) -> Wave | None:
    return next((w for w in waves(session, edition) if not w.done), None)


def summary(session: Session, edition: Edition) -> dict | None:
    """An edition's waves as the desk, its API and the CLI show them; None for one that goes to everyone at
    once (or hasn't started)."""
    found = waves(session, edition)
    if not found:
        return None
    coming = next((w for w in found if not w.done), None)
    return dict(total=len(found), done=sum(w.done for w in found), waiting=sum(w.waiting for w in found),
                next_at=coming.at if coming else None, next_zones=coming.zones if coming else [],
                waves=[dict(at=w.at, zones=w.zones, readers=w.readers, waiting=w.waiting, done=w.done)
                       for w in found])


def in_words(said: dict) -> str:
    """E.g. "3 of 27 waves done; waiting: 1,234 — next wave 05:00 UTC, 07:00 Europe/Berlin"."""
    words = f"{said['done']} of {said['total']} waves done"
    if said["next_at"] is None:
        return words
    at, zone = said["next_at"], said["next_zones"][0]
    more = f" and {len(said['next_zones']) - 1} more zones" if len(said["next_zones"]) > 1 else ""
    return (f"{words}; waiting: {said['waiting']:,} — next wave {at:%Y-%m-%d %H:%M} UTC, "
            f"{at.astimezone(ZoneInfo(zone)):%H:%M} {zone}{more}")
