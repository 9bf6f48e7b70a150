"""A reader's rights over their data: a copy of everything held about them (GDPR Art. 15 and 20), and
erasure (Art. 17), after which only a keyed hash of the address stays, so no import or editor adds it back.

Erasure keeps an erased reader's deliveries, cut from them (no subscriber, no server reply, which may quote
the address): an edition's sent, bounced and failed counts and its results page stay as they were, and
nothing left names the person. Everything else that names them goes: the subscriber row, subscriptions,
timeline, mails about their subscription, the inbound mails about them, their confirmation-mail counter.
The removals record says that an erasure happened, by whom and how much went, never whose.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, inspect, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from syndicate import removals
from syndicate.models import (
    ConfirmationMail,
    Delivery,
    Edition,
    ErasedAddress,
    ErasureKey,
    InboundMessage,
    Newsletter,
    Subscriber,
    SubscriberEvent,
    SubscriberImport,
    Subscription,
    Throttle,
    utcnow,
)
from syndicate.subscribers import consent

EXPORT_FORMAT = "syndicate-personal-data/1"
ERASED_REASON = "erased at the reader's request"
ERASED_ADDRESS = "(an erased address)"  # how an import's report names one: never by the address itself


# ── the erased addresses ─────────────────────────────────────────────────────


def _key(session: Session) -> bytes:
    """The random key erased addresses are hashed with, made on first use. Kept in the database, not derived
    from SYNDICATE_SECRET_KEY: a new secret key must not forget everyone erased before it."""
    key = session.scalar(select(ErasureKey.key).where(ErasureKey.id == 1))
    if key is None:
        attempt = session.begin_nested()
        try:
            session.add(ErasureKey(id=1, key=secrets.token_hex(32)))
            session.flush()
            attempt.commit()
        except IntegrityError:  # another process made it first: use theirs
            attempt.rollback()
        key = session.scalar(select(ErasureKey.key).where(ErasureKey.id == 1))
    return bytes.fromhex(key)


def digest(session: Session, email: str) -> str:
    """HMAC-SHA256 of the address as consent.normalise_email reads it: the same person in any case."""
    return hmac.new(_key(session), consent.normalise_email(email).encode(), hashlib.sha256).hexdigest()


def erased(session: Session, emails: list[str]) -> set[str]:
    """Those of `emails` (normalised already) that were erased at their owner's request."""
    if not emails:
        return set()
    key = _key(session)
    by_digest = {hmac.new(key, e.encode(), hashlib.sha256).hexdigest(): e for e in emails}
    found = session.scalars(select(ErasedAddress.digest).where(ErasedAddress.digest.in_(list(by_digest))))
    return {by_digest[d] for d in found}


def is_erased(session: Session, email: str) -> bool:
    return bool(erased(session, [consent.normalise_email(email)]))


def forget_erasure(session: Session, email: str) -> bool:
    """The reader signed up again themselves and confirmed by mail: their fresh consent lifts the block."""
    return session.execute(delete(ErasedAddress).where(ErasedAddress.digest == digest(session, email))).rowcount > 0


# ── erasure ──────────────────────────────────────────────────────────────────


@dataclass
class Erased:
    subscriber_id: int
    subscriptions: int
    events: int
    mails: int  # confirmation, welcome and erasure mails
    inbound: int  # mails sent back to us about them
    deliveries: int  # kept for the editions' figures, cut from the person

    def summary(self) -> str:
        return (f"{self.subscriptions} subscriptions, {self.events} timeline entries, {self.mails} mails about "
                f"the subscription and {self.inbound} mails received about the address deleted; "
                f"{self.deliveries} deliveries kept for the editions' figures without the person")


def erase_plan(session: Session, subscriber: Subscriber) -> removals.Plan:
    """What erasing `subscriber` does, said before it is done (the desk's confirmation page)."""
    sid = subscriber.id
    deliveries = session.scalar(select(func.count()).select_from(Delivery).where(Delivery.subscriber_id == sid))
    events = session.scalar(select(func.count()).select_from(SubscriberEvent)
                            .where(SubscriberEvent.subscriber_id == sid))
    return removals.Plan(f"the data of {subscriber.email}", [
        f"the address, the name and {len(subscriber.subscriptions)} subscriptions are deleted for good: no "
        "newsletter goes to it any more, and it can't be undone",
        f"its timeline ({events} entries), the mails about the subscription and the mails received about the "
        "address are deleted",
        f"its {deliveries} deliveries stay in the editions' figures, naming nobody",
        "a keyed hash of the address stays, so no import or editor adds it back; only the reader's own sign-up, "
        "confirmed by mail, can",
        "the removals record says an editor erased a subscriber at the reader's request, without the address",
    ])


def erase(session: Session, subscriber: Subscriber, by: str, now: datetime | None = None) -> Erased:
    """Delete everything that names `subscriber` and block the address from coming back by import.
    `by` is who asked: "reader" (through the confirmed link), or the editor's name, or "cli"."""
    now = now or utcnow()
    sid, email = subscriber.id, subscriber.email
    consent.skip_open_deliveries(session, sid, ERASED_REASON)
    mine = Delivery.subscriber_id == sid
    _fold_outcomes(session, sid)
    delivery_ids = select(Delivery.id).where(mine).scalar_subquery()
    inbound = session.execute(delete(InboundMessage).where(or_(
        InboundMessage.subscriber_id == sid, InboundMessage.delivery_id.in_(delivery_ids)))
        .execution_options(synchronize_session=False)).rowcount
    events = session.execute(delete(SubscriberEvent).where(SubscriberEvent.subscriber_id == sid)
                             .execution_options(synchronize_session=False)).rowcount
    mails = session.execute(delete(ConfirmationMail).where(ConfirmationMail.subscriber_id == sid)
                            .execution_options(synchronize_session=False)).rowcount
    subscriptions = session.execute(delete(Subscription).where(Subscription.subscriber_id == sid)
                                    .execution_options(synchronize_session=False)).rowcount
    # The server's reply may quote the address; the status and times are the edition's figures.
    deliveries = session.execute(update(Delivery).where(mine).values(subscriber_id=None, last_reply=None)
                                 .execution_options(synchronize_session=False)).rowcount
    session.execute(delete(Throttle).where(Throttle.key == f"confirm:address:{email}")
                    .execution_options(synchronize_session=False))
    _scrub_import_reports(session, email)
    session.expunge(subscriber)
    session.execute(delete(Subscriber).where(Subscriber.id == sid).execution_options(synchronize_session=False))
    key = digest(session, email)
    if session.get(ErasedAddress, key) is None:
        session.add(ErasedAddress(digest=key, erased_at=now))
    done = Erased(sid, subscriptions, events, mails, inbound, deliveries)
    asked = "at the reader's request" if by == "reader" else f"by {by}, at the reader's request"
    removals.record(session, "subscriber", f"#{sid}", "erased", by, f"erased {asked}: {done.summary()}",
                    now=now)
    session.flush()
    return done


def _fold_outcomes(session: Session, subscriber_id: int) -> None:
    """Write on each of the reader's deliveries what the edition's figures count about them (deliveries.report):
    a bounce or complaint about it, a newsletter left after it was sent. Their events and subscriptions go.
    Three queries, however many editions they got."""
    about: dict[int, set[str]] = {}
    for delivery_id, kind in session.execute(select(SubscriberEvent.delivery_id, SubscriberEvent.kind).where(
            SubscriberEvent.subscriber_id == subscriber_id, SubscriberEvent.delivery_id.is_not(None))):
        about.setdefault(delivery_id, set()).add(kind)
    left = dict(session.execute(select(Subscription.newsletter_id, Subscription.unsubscribed_at).where(
        Subscription.subscriber_id == subscriber_id, Subscription.status == "unsubscribed")).all())
    for delivery, newsletter_id, started_at in session.execute(
            select(Delivery, Edition.newsletter_id, Edition.started_at).join(Edition)
            .where(Delivery.subscriber_id == subscriber_id)).all():
        kinds, gone = about.get(delivery.id, set()), left.get(newsletter_id)
        outcome = [what for what, held in (
            ("bounced", kinds & {"bounce", "soft_bounce"}), ("complained", "complaint" in kinds),
            ("unsubscribed", delivery.status == "sent" and started_at is not None and gone is not None
             and gone >= started_at)) if held]
        delivery.erased_with = ",".join(outcome) or None
    session.flush()


def _scrub_import_reports(session: Session, email: str) -> None:
    """An import's report lists the rows it skipped by address: the erased one goes from it."""
    for job in session.scalars(select(SubscriberImport).where(SubscriberImport.report.is_not(None))):
        report, changed = dict(job.report), False
        for key in ("skipped", "bad", "duplicates"):
            rows = report.get(key) or []
            kept = [r for r in rows if not (isinstance(r, dict) and str(r.get("email", "")).lower() == email)]
            if len(kept) != len(rows):
                report[key], changed = kept, True
        if changed:
            job.report = report


# ── a copy of everything ─────────────────────────────────────────────────────


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _columns(row, leave_out: tuple[str, ...] = ()) -> dict:
    """Every column of `row`, whichever the model has today: a column added later is exported too."""
    return {a.key: _plain(getattr(row, a.key)) for a in inspect(row).mapper.column_attrs if a.key not in leave_out}


INTERNAL = ("claimed_by", "claimed_at")  # which worker held a row once: nothing about the person


def export(session: Session, subscriber: Subscriber, now: datetime | None = None) -> dict:
    """Everything held about `subscriber`, as JSON-ready data in a versioned format."""
    sid = subscriber.id
    newsletters = {n.id: n for n in session.scalars(select(Newsletter))}

    def named(newsletter_id: int | None) -> dict:
        n = newsletters.get(newsletter_id)
        return dict(newsletter=n.slug, newsletter_name=n.name) if n else {}

    subscriptions = [named(s.newsletter_id) | _columns(s, ("id", "subscriber_id"))
                     for s in session.scalars(select(Subscription).where(Subscription.subscriber_id == sid)
                                              .order_by(Subscription.id))]
    events = [named(e.newsletter_id) | _columns(e, ("subscriber_id",))
              for e in session.scalars(select(SubscriberEvent).where(SubscriberEvent.subscriber_id == sid)
                                       .order_by(SubscriberEvent.at, SubscriberEvent.id))]
    deliveries = [named(newsletter_id) | dict(edition=number, subject=subject) | _columns(d, (
                      "subscriber_id", "edition_id", *INTERNAL))
                  for d, number, subject, newsletter_id in session.execute(
                      select(Delivery, Edition.number, Edition.subject, Edition.newsletter_id).join(Edition)
                      .where(Delivery.subscriber_id == sid).order_by(Delivery.created_at, Delivery.id))]
    mails = [named(m.newsletter_id) | _columns(m, ("subscriber_id", "newsletter_id", *INTERNAL))
             for m in session.scalars(select(ConfirmationMail).where(ConfirmationMail.subscriber_id == sid)
                                      .order_by(ConfirmationMail.id))]
    inbound = [_columns(m, ("subscriber_id",)) for m in session.scalars(
        select(InboundMessage).where(InboundMessage.subscriber_id == sid).order_by(InboundMessage.id))]
    return {
        "format": EXPORT_FORMAT,
        "exported_at": _plain(now or utcnow()),
        "subscriber": _columns(subscriber),
        "consent": dict(
            signed_up_at=_plain(subscriber.created_at), confirmed_at=_plain(subscriber.confirmed_at),
            how=[dict(at=e["at"], what=e["kind"], via=e["source"], detail=e["detail"]) for e in events
                 if e["kind"] in ("subscribed", "confirmed", "resubscribed", "imported", "restored")],
            ip_address="not stored: sign-ups keep no IP address"),
        "subscriptions": subscriptions,
        "timeline": events,
        "deliveries": deliveries,
        "mails_about_the_subscription": mails,
        "mails_received_about_the_address": inbound,
    }
