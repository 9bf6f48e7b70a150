"""Subscribers: double opt-in, one-click unsubscribe."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from syndicate import tokens
from syndicate.config import Settings
from syndicate.errors import InvalidInput, NotFound
from syndicate.mail import Outgoing, build_message
from syndicate.mail import message_id as make_message_id
from syndicate.models import Delivery, Edition, Newsletter, Subscriber, SubscriberEvent, Subscription, utcnow
from syndicate.templating import render

MAX_CONFIRMATIONS_PER_HOUR = 3


def normalise_email(email: str) -> str:
    """Lower-case, with an internationalised domain in its ASCII (punycode) form.

    Addresses whose local part isn't ASCII need SMTPUTF8 all the way; we refuse
    them rather than accept a subscriber we can't deliver to.
    """
    try:
        valid = validate_email(email.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as e:
        raise InvalidInput(f"{email!r} is not an email address we can send to: {e}") from e
    return (valid.ascii_email or valid.normalized).lower()


@dataclass
class Signup:
    subscriber: Subscriber
    send_confirmation: bool  # a confirmation mail should go out now
    awaiting_confirmation: bool  # some of the chosen newsletters wait for the reader's confirmation


def subscribe(session: Session, email: str, newsletter_ids: list[int], *, name: str | None = None,
              confirmed: bool = False, now: datetime | None = None) -> Signup:
    """Record a signup. Without `confirmed` (the editor vouching for consent), every newsletter
    not already active waits for the reader to confirm by mail — whoever typed the address."""
    now = now or utcnow()
    email = normalise_email(email)
    if not newsletter_ids:
        raise InvalidInput("choose at least one newsletter")
    found = set(session.scalars(select(Newsletter.id).where(Newsletter.id.in_(newsletter_ids))))
    if missing := set(newsletter_ids) - found:
        raise InvalidInput(f"no newsletter with id {sorted(missing)}")
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == email))
    if subscriber is None:
        subscriber = Subscriber(email=email, name=(name or "").strip()[:200] or None, created_at=now)
        session.add(subscriber)
        session.flush()
    if confirmed and subscriber.status == "pending":
        subscriber.status, subscriber.confirmed_at = "confirmed", now
    wanted = "active" if confirmed else "pending"
    for newsletter_id in newsletter_ids:
        subscription = session.scalar(select(Subscription).where(
            Subscription.subscriber_id == subscriber.id, Subscription.newsletter_id == newsletter_id))
        if subscription is None:
            session.add(Subscription(subscriber_id=subscriber.id, newsletter_id=newsletter_id,
                                     status=wanted, created_at=now))
        elif subscription.status != "active":
            subscription.status, subscription.unsubscribed_at = wanted, None
    session.flush()
    awaiting = bool(session.scalar(select(func.count()).select_from(Subscription).where(
        Subscription.subscriber_id == subscriber.id, Subscription.status == "pending")))
    send = awaiting and _may_send_confirmation(subscriber, now)
    if send:
        subscriber.confirmations_sent += 1
        subscriber.confirmation_sent_at = now
    return Signup(subscriber, send, awaiting)


def _may_send_confirmation(subscriber: Subscriber, now: datetime) -> bool:
    if subscriber.confirmation_sent_at is None or now - subscriber.confirmation_sent_at > timedelta(hours=1):
        subscriber.confirmations_sent = 0
    return subscriber.confirmations_sent < MAX_CONFIRMATIONS_PER_HOUR


def confirm(session: Session, settings: Settings, token: str, now: datetime | None = None) -> Subscriber:
    """The reader clicked the link: the address is theirs, and the newsletters they chose start."""
    now = now or utcnow()
    subscriber = session.get(Subscriber, tokens.read_confirm_token(settings.secret_key, token))
    if subscriber is None:
        raise NotFound("this confirmation link belongs to an address that no longer exists")
    if subscriber.status == "pending":
        subscriber.status, subscriber.confirmed_at = "confirmed", now
    session.execute(
        update(Subscription).where(Subscription.subscriber_id == subscriber.id, Subscription.status == "pending")
        .values(status="active").execution_options(synchronize_session=False)
    )
    return subscriber


def unsubscribe(session: Session, settings: Settings, token: str, now: datetime | None = None) -> Subscription:
    """Leave one newsletter at once; a delivery of it still waiting to go out is skipped."""
    now = now or utcnow()
    subscriber_id, newsletter_id = tokens.read_unsubscribe_token(settings.secret_key, token)
    subscription = session.scalar(select(Subscription).where(
        Subscription.subscriber_id == subscriber_id, Subscription.newsletter_id == newsletter_id))
    if subscription is None:
        raise NotFound("this unsubscribe link belongs to a subscription that no longer exists")
    if subscription.status == "active":
        subscription.status, subscription.unsubscribed_at = "unsubscribed", now
    session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == subscriber_id, Delivery.status.in_(("pending", "deferred")),
               Delivery.edition_id.in_(select(Edition.id).where(Edition.newsletter_id == newsletter_id)))
        .values(status="skipped", last_reply="unsubscribed before sending")
        .execution_options(synchronize_session=False)
    )
    return subscription


def confirmation_message(session: Session, settings: Settings, subscriber: Subscriber) -> Outgoing | None:
    """The mail with the confirmation link; None when nothing waits for confirmation any more."""
    newsletters = session.scalars(
        select(Newsletter).join(Subscription)
        .where(Subscription.subscriber_id == subscriber.id, Subscription.status == "pending")
        .order_by(Newsletter.name)
    ).all()
    if not newsletters:
        return None
    sender = newsletters[0]
    url = f"{settings.base_url}/confirm/{tokens.confirm_token(settings.secret_key, subscriber.id)}"
    context = dict(subscriber=subscriber, newsletters=newsletters, confirm_url=url)
    context["subject"] = render("email/confirm/subject.txt", **context).strip()
    domain = sender.from_address.rpartition("@")[2]
    message_id = make_message_id(domain, settings.secret_key, "confirm", subscriber.id, subscriber.confirmations_sent)
    data = build_message(
        sender=Address(sender.from_name, addr_spec=sender.from_address),
        to=Address(subscriber.name or "", addr_spec=subscriber.email),
        subject=context["subject"],
        text=render("email/confirm/body.txt", **context),
        html=render("email/confirm/body.html", **context),
        message_id=message_id,
        date=utcnow(),
        headers={"Auto-Submitted": "auto-generated"},
    )
    return Outgoing(sender.from_address, subscriber.email, data, message_id)


# ── events and suppression ───────────────────────────────────────────────────

SUPPRESSED = ("unsubscribed", "bounced", "complained")  # statuses no mail goes to


def record_event(session: Session, subscriber_id: int, kind: str, source: str, *, detail: str | None = None,
                 newsletter_id: int | None = None, delivery_id: int | None = None, source_id: str | None = None,
                 now: datetime | None = None) -> bool:
    """Add a line to the subscriber's timeline. False (and nothing added) if `source_id` was seen before:
    a provider sending the same notification twice changes nothing."""
    seen = select(SubscriberEvent.id).where(SubscriberEvent.source_id == source_id)
    if source_id is not None and session.scalar(seen):
        return False
    session.add(SubscriberEvent(subscriber_id=subscriber_id, kind=kind, source=source,
                                detail=(detail or None) and detail[:2000], newsletter_id=newsletter_id,
                                delivery_id=delivery_id, source_id=source_id, at=now or utcnow()))
    session.flush()
    return True


def skip_open_deliveries(session: Session, subscriber_id: int, reason: str, newsletter_id: int | None = None) -> int:
    """Deliveries not yet handed to the server are skipped, with why: leaving takes effect at once."""
    query = (update(Delivery)
             .where(Delivery.subscriber_id == subscriber_id, Delivery.status.in_(("pending", "deferred")))
             .values(status="skipped", last_reply=reason)
             .execution_options(synchronize_session=False))
    if newsletter_id is not None:
        query = query.where(Delivery.edition_id.in_(select(Edition.id).where(Edition.newsletter_id == newsletter_id)))
    return session.execute(query).rowcount


def suppress(session: Session, subscriber: Subscriber, status: str, source: str, detail: str, *,
             delivery_id: int | None = None, source_id: str | None = None, now: datetime | None = None) -> bool:
    """Stop all mail to an address: bounced (it doesn't exist), complained (spam report) or unsubscribed
    (left everything). Kept as a row, so an import can't add the address back by accident.
    False if this event (by `source_id`) was already recorded."""
    assert status in SUPPRESSED, status
    now = now or utcnow()
    kind = {"bounced": "bounce", "complained": "complaint", "unsubscribed": "unsubscribed"}[status]
    if not record_event(session, subscriber.id, kind, source, detail=detail, delivery_id=delivery_id,
                        source_id=source_id, now=now):
        return False
    if subscriber.status not in ("complained",):  # a complaint is the strongest word; nothing overrides it
        subscriber.status = status
    if status != "bounced":  # a bounced address keeps its choices, in case the editor restores it
        session.execute(
            update(Subscription)
            .where(Subscription.subscriber_id == subscriber.id, Subscription.status != "unsubscribed")
            .values(status="unsubscribed", unsubscribed_at=now)
            .execution_options(synchronize_session=False)
        )
    skip_open_deliveries(session, subscriber.id, f"{status} before sending: {detail}"[:2000])
    session.flush()
    return True
