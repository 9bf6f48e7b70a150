"""An edition at each reader's local time: one cut, one render, its deliveries sent in waves.

A newsletter with `local_time` sends its regular edition of a slot (07:00 on 29 March, say, from its cron in its
own zone) at that wall-clock time in each reader's zone. The edition is cut and rendered once, when the first
reader's zone reaches it (schedules.first_wave); the fan-out makes every row as always, and the rows of readers
whose 07:00 is still ahead wait (status `waiting`, next_attempt_at their moment), one UPDATE per zone. The tick
makes a waiting row pending when its moment comes and hands its batch to a worker, as for a deferred row
(deliveries.requeue); the edition stays `sending` until its last wave is done. A pause holds waiting rows (the
tick wakes only a sending edition's), a cancel skips them, an unsubscribe skips the reader's.

A wave is the readers of one due instant: zones that share the clock that day share a wave."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, literal, select, update
from sqlalchemy.orm import Session

from syndicate.models import Delivery, Edition, Newsletter, Subscriber, UTCDateTime
from syndicate.newsletters import schedules


def in_waves(edition: Edition, newsletter: Newsletter) -> bool:
    """Whether an edition goes at each reader's local time: a local-time newsletter's regular run. A breaking
    story or an editor's one-off goes to everyone at its moment."""
    return newsletter.local_time and edition.kind == "regular" and edition.slot is not None


def _zone(newsletter: Newsletter):
    return func.coalesce(Subscriber.timezone, newsletter.timezone)


def _moments(session: Session, edition: Edition, newsletter: Newsletter) -> dict[str, datetime]:
    """Each zone among the edition's recipients, and its moment: the slot's wall-clock time there."""
    day, clock = schedules.local_slot(newsletter, edition.slot)
    zones = session.scalars(select(_zone(newsletter)).distinct()
                            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                            .where(Delivery.edition_id == edition.id))
    return {zone: schedules.wall_clock(day, clock, zone) for zone in zones}


def hold(session: Session, edition: Edition, newsletter: Newsletter, now: datetime) -> int:
    """After the fan-out: the pending rows of readers whose moment is still ahead wait for it. How many.

    One UPDATE for every zone, each row reading its reader's zone by primary key: an UPDATE per zone
    scanned the readers once per zone (1.5 s for 10,000 readers in 25 zones on PostgreSQL)."""
    later = {zone: at for zone, at in _moments(session, edition, newsletter).items() if at > now}
    if not later:
        return 0
    zone = (select(_zone(newsletter)).where(Subscriber.id == Delivery.subscriber_id)
            .correlate(Delivery).scalar_subquery())
    return session.execute(
        update(Delivery).where(Delivery.edition_id == edition.id, Delivery.status == "pending", zone.in_(later))
        .values(status="waiting", next_attempt_at=case({z: literal(at, UTCDateTime()) for z, at in later.items()},
                                                       value=zone))
        .execution_options(synchronize_session=False)
    ).rowcount


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
