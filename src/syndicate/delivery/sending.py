"""edition → delivery: an edition goes out. Its start fixes the recipients (the fan-out into one delivery
row each); it can be resumed after a pause, and its failed recipients tried again; and the mail lane's
tick starts what is due and hands every batch that needs a worker to one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.delivery import choices, deliveries, qa
from syndicate.errors import InvalidInput, SyndicateError
from syndicate.models import Delivery, Edition, Newsletter, Subscriber, Subscription, utcnow
from syndicate.newsletters import editions, schedules

log = logging.getLogger(__name__)


@dataclass
class Cut:
    edition: Edition
    batches: list[tuple[int, int, int]]  # (edition id, first and last delivery id) to hand to workers


def cut(session: Session, newsletter: Newsletter, settings: Settings, now: datetime | None = None,
        kind: str = "regular", progress: Callable[[int, int], object] | None = None) -> Cut:
    """Make the next edition and send it now (`progress`: the fan-out's, deliveries.fan_out)."""
    now = now or utcnow()
    edition = editions.make_now(session, newsletter, settings, now, kind)
    return Cut(edition, start(session, edition, settings, now, progress) if edition.status == "scheduled" else [])


def start(session: Session, edition: Edition, settings: Settings, now: datetime,
          progress: Callable[[int, int], object] | None = None) -> list[tuple[int, int, int]]:
    """scheduled → sending: the recipients are fixed (those confirmed now) and the content is frozen (a
    local-time newsletter's readers still before the slot's time wait for it: delivery.waves); or
    scheduled → blocked, if the pre-send checks find what an editor hasn't let pass (the note says what).

    A conditional UPDATE: two ticks starting the same edition fan it out once.
    """
    if edition.status != "scheduled":
        return []
    found = qa.gate(session, settings, edition, now)
    session.flush()
    if found.blocking:
        session.execute(
            update(Edition).where(Edition.id == edition.id, Edition.status == "scheduled")
            .values(status="blocked", note=qa.blocked_because(edition, found), checks=edition.checks)
            .execution_options(synchronize_session=False))
        session.refresh(edition)
        log.warning("%s edition %d blocked: %s", edition.newsletter.slug, edition.number, edition.note)
        return []
    started = session.execute(
        update(Edition).where(Edition.id == edition.id, Edition.status == "scheduled")
        .values(status="sending", started_at=now).execution_options(synchronize_session=False)
    )
    if started.rowcount != 1:
        return []
    session.refresh(edition)
    # At each reader's local time, only the waves due now go to workers; the tick hands out each later one
    # when it is due (delivery.waves).
    return deliveries.fan_out(session, edition, settings.batch_size, now, settings, progress)


class Blocked(InvalidInput):
    """The pre-send checks refuse the edition; nothing was changed."""


def schedule(session: Session, edition: Edition, settings: Settings, at: datetime, *, now: datetime | None = None,
             override: list[str] | tuple[str, ...] = (), reason: str | None = None, by: str = "cli") -> qa.Review:
    """Schedule an edition that passes the pre-send checks (or whose failing checks an editor lets pass,
    saying why: kept with who). The checks run again when it starts."""
    now = now or utcnow()
    schedules.check_time(at, now)
    if override:
        qa.override(edition, list(override), reason or "", by, now)
    elif reason:
        raise InvalidInput("a reason goes with a check to let pass: give --override CHECK too")
    found = qa.gate(session, settings, edition, now)
    if found.blocking:
        checks = sorted({f["check"] for f in found.blocking})
        raise Blocked(f"edition {edition.newsletter.slug}/{edition.number} can't go out as it is: "
                      + "; ".join(f"[{f['check']}] {f['message']}" for f in found.blocking)
                      + f". Fix it, or let the check pass: --override {' --override '.join(checks)} --reason WHY")
    session.flush()
    editions.schedule(session, edition, at, now)
    return found


def resume(session: Session, edition: Edition, settings: Settings) -> list[tuple[int, int, int]]:
    """Carry on where it stopped: back to sending (its pending recipients get workers now) or scheduled."""
    if edition.started_at is None:
        editions.move(session, edition, "scheduled", ("paused",))
        return []
    editions.move(session, edition, "sending", ("paused",))
    return deliveries.pending_batches(session, settings.batch_size, edition_id=edition.id)


def resend_failed(session: Session, edition: Edition, settings: Settings, now: datetime | None = None
                  ) -> tuple[list[tuple[int, int, int]], int]:
    """Try again for the recipients that failed, only them — and only those still subscribed and not
    suppressed (a hard bounce stays suppressed), whose stories of it no later mail has carried (their cursor
    is still before it: delivery.choices). Returns the batches and how many were left out."""
    now = now or utcnow()
    if edition.status not in ("sending", "sent", "failed"):
        raise InvalidInput(f"edition #{edition.number} is {edition.status}; only a sent (or sending, or failed) "
                           "edition has failed recipients to resend to")
    choices.fold_open(session, edition.newsletter_id)  # the cursors, as they stand
    failed = select(Delivery.id).where(Delivery.edition_id == edition.id, Delivery.status == "failed")
    reached = aliased(Edition)
    eligible = (failed.join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .join(Subscription, and_(Subscription.subscriber_id == Subscriber.id,
                                         Subscription.newsletter_id == edition.newsletter_id))
                .where(Subscriber.status == "confirmed", Subscription.status == "active",
                       or_(Subscription.cursor_edition_id.is_(None), select(reached.id).where(
                           reached.id == Subscription.cursor_edition_id,
                           reached.started_at < edition.started_at).exists())))
    ids = list(session.scalars(eligible))
    left_out = session.scalar(select(func.count()).select_from(failed.subquery())) - len(ids)
    if ids:
        session.execute(
            update(Delivery).where(Delivery.id.in_(ids), Delivery.status == "failed")
            .values(status="pending", attempts=0, next_attempt_at=now, claimed_by=None)
            .execution_options(synchronize_session=False)
        )
        session.execute(update(Edition).where(Edition.id == edition.id)
                        .values(status="sending", sent_at=None, note=None).execution_options(synchronize_session=False))
        session.refresh(edition)
    return [(edition.id, lo, hi) for lo, hi in deliveries.ranges(ids, settings.batch_size)], left_out


def run_regular(session: Session, newsletter_id: int, settings: Settings, now: datetime) -> Cut | None:
    """A due run: the edition an editor prepared for this slot, or a new cut; then it starts."""
    made = editions.regular_edition(session, newsletter_id, settings, now)
    if made is None:
        return None
    edition, now_please = made
    return Cut(edition, start(session, edition, settings, now) if now_please and edition.status == "scheduled" else [])


def run_breaking(session: Session, newsletter: Newsletter, settings: Settings, now: datetime) -> list[Cut]:
    """Each new story in a breaking category goes out on its own, at once."""
    return [Cut(edition, start(session, edition, settings, now))
            for edition in editions.breaking_editions(session, newsletter, settings, now)]


def send_breaking(session: Session, newsletter: Newsletter, article_id: int, settings: Settings,
                  now: datetime | None = None) -> tuple[Cut, list[str]]:
    """An editor's breaking story: its own edition, started now (editions.breaking_now says what it takes)."""
    now = now or utcnow()
    edition, moved = editions.breaking_now(session, newsletter, article_id, settings, now)
    return Cut(edition, start(session, edition, settings, now)), moved


def _links_ahead(session: Session, due: list[int], lanes: list[int], now: datetime) -> list[str]:
    """The story links (and their images) the pre-send gate is about to check this tick: of the stories due
    runs will cut, the breaking stories waiting, and the editions scheduled for now."""
    stories = []
    for newsletter_id in dict.fromkeys([*due, *lanes]):
        newsletter = session.get(Newsletter, newsletter_id)
        found = editions.candidates(session, newsletter, now)
        if newsletter_id not in due:
            found = [a for a in found if editions.is_breaking(newsletter, a)]
        stories += found[:newsletter.max_items]
    for edition_id in editions.due_edition_ids(session, now):
        stories += [item.article for item in session.get(Edition, edition_id).items]
    return [url for a in stories for url in (a.url, a.image_url) if url]


def run_due(sessions: sessionmaker, settings: Settings, now: datetime) -> list[tuple[int, int, int]]:
    """Everything a tick does for mail: regular runs, breaking stories, scheduled editions, and the
    deliveries that need a worker again. Each newsletter in its own transaction: one broken template
    doesn't hold the others back. Returns the batches to hand to workers."""
    batches: list[tuple[int, int, int]] = []

    def each(ids, work) -> None:
        for item_id in ids:
            try:
                with transaction(sessions) as session:
                    work(session, item_id)
            except SyndicateError as e:
                log.error("%s %d: %s", work.__name__, item_id, e)

    def regular(session, newsletter_id):
        if (done := run_regular(session, newsletter_id, settings, now)) is not None:
            batches.extend(done.batches)
            log.info("%s edition %d: %s", done.edition.newsletter.slug, done.edition.number, done.edition.status)

    def breaking(session, newsletter_id):
        for done in run_breaking(session, session.get(Newsletter, newsletter_id), settings, now):
            batches.extend(done.batches)

    def scheduled(session, edition_id):
        batches.extend(start(session, session.get(Edition, edition_id), settings, now))

    with transaction(sessions) as session:
        due, lanes = editions.due_newsletter_ids(session, now), editions.breaking_newsletter_ids(session)
        ahead = _links_ahead(session, due, lanes, now)
    qa.ask_ahead(sessions, settings, ahead, now)  # with no transaction open: the gates below find the answers
    each(due, regular)
    each(lanes, breaking)
    with transaction(sessions) as session:
        ready = editions.due_edition_ids(session, now)
    each(ready, scheduled)
    with transaction(sessions) as session:
        batches.extend(deliveries.requeue(session, settings, now))
    return batches
