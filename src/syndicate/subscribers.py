"""Subscribers: double opt-in, one-click unsubscribe."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from syndicate import tokens
from syndicate.config import Settings
from syndicate.errors import InvalidInput, NotFound
from syndicate.mail import Outgoing, build_message
from syndicate.models import Delivery, Edition, Newsletter, Subscriber, Subscription, utcnow
from syndicate.templating import render

MAX_CONFIRMATIONS_PER_HOUR = 3


def normalise_email(email: str) -> str:
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as e:
        raise InvalidInput(f"{email!r} is not an email address we can send to: {e}") from e


@dataclass
class Signup:
    subscriber: Subscriber
    send_confirmation: bool


def subscribe(session: Session, email: str, newsletter_ids: list[int], *, name: str | None = None,
              confirmed: bool = False, now: datetime | None = None) -> Signup:
    """Record a signup; whether a confirmation mail should go out now (rate-limited per address)."""
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
    elif subscriber.status == "unsubscribed":
        # Coming back through the form is a fresh opt-in: confirm again.
        subscriber.status = "pending"
    for newsletter_id in newsletter_ids:
        subscription = session.scalar(select(Subscription).where(
            Subscription.subscriber_id == subscriber.id, Subscription.newsletter_id == newsletter_id))
        if subscription is None:
            session.add(Subscription(subscriber_id=subscriber.id, newsletter_id=newsletter_id, created_at=now))
        elif subscription.status != "active" and subscriber.status == "pending":
            subscription.status, subscription.unsubscribed_at = "active", None
    session.flush()
    send = subscriber.status == "pending" and _may_send_confirmation(subscriber, now)
    if send:
        subscriber.confirmations_sent += 1
        subscriber.confirmation_sent_at = now
    return Signup(subscriber, send)


def _may_send_confirmation(subscriber: Subscriber, now: datetime) -> bool:
    if subscriber.confirmation_sent_at is None or now - subscriber.confirmation_sent_at > timedelta(hours=1):
        subscriber.confirmations_sent = 0
    return subscriber.confirmations_sent < MAX_CONFIRMATIONS_PER_HOUR


def confirm(session: Session, settings: Settings, token: str, now: datetime | None = None) -> Subscriber:
    subscriber = session.get(Subscriber, tokens.read_confirm_token(settings.secret_key, token))
    if subscriber is None:
        raise NotFound("this confirmation link belongs to an address that no longer exists")
    if subscriber.status == "pending":
        subscriber.status, subscriber.confirmed_at = "confirmed", now or utcnow()
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


def confirmation_message(session: Session, settings: Settings, subscriber: Subscriber) -> Outgoing:
    newsletters = session.scalars(
        select(Newsletter).join(Subscription).where(Subscription.subscriber_id == subscriber.id)
        .order_by(Newsletter.name)
    ).all()
    sender = newsletters[0] if newsletters else None
    from_address = sender.from_address if sender else f"newsletter@{settings.base_url.split('://')[1].split('/')[0].split(':')[0]}"
    url = f"{settings.base_url}/confirm/{tokens.confirm_token(settings.secret_key, subscriber.id)}"
    context = dict(subscriber=subscriber, newsletters=newsletters, confirm_url=url)
    domain = from_address.rpartition("@")[2]
    message_id = f"<confirm.{subscriber.id}.{subscriber.confirmations_sent}@{domain}>"
    data = build_message(
        sender=Address(sender.from_name if sender else "", addr_spec=from_address),
        to=Address(subscriber.name or "", addr_spec=subscriber.email),
        subject=render("email/confirm/subject.txt", **context).strip(),
        text=render("email/confirm/body.txt", **context),
        html=render("email/confirm/body.html", **context),
        message_id=message_id,
        date=utcnow(),
        headers={"Auto-Submitted": "auto-generated"},
    )
    return Outgoing(from_address, subscriber.email, data, message_id)
