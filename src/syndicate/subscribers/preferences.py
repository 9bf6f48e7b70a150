"""A reader's own page: which newsletters they get, changed or all left at once, and why no mail goes to them
(a bounce, a complaint) when that is so."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syndicate.errors import InvalidInput
from syndicate.models import (
    Newsletter,
    Subscriber,
    SubscriberEvent,
    Subscription,
    utcnow,
)
from syndicate.subscribers import choices, consent, zones


@dataclass
class Choice:
    newsletter: Newsletter
    subscribed: bool  # gets it, or chose it and hasn't confirmed yet (`waiting`)
    waiting: bool = False
    offered: list[str] = field(default_factory=list)  # the topics the reader may choose (choices.topics_of)
    topics: list[str] | None = None  # their topics; None: every story
    frequency: str = "each"


@dataclass
class Preferences:
    subscriber: Subscriber
    choices: list[Choice]
    suspended: str | None  # why no mail goes to this address (it bounced, or a complaint), said to the reader


@dataclass
class Saved:
    joined: list[Newsletter]
    left: list[Newsletter]
    refused: list[Newsletter]  # chosen, but mail to this address is suspended
    changed: list[Newsletter] = field(default_factory=list)  # topics or frequency changed


def _subscriber(session: Session, subscriber_id: int) -> Subscriber:
    return consent.by_id(session, subscriber_id, "this preferences link belongs to an address that no longer exists")


def preferences(session: Session, subscriber_id: int) -> Preferences:
    """What the reader's preferences page offers: every active newsletter, and a paused one they still get."""
    subscriber = _subscriber(session, subscriber_id)
    subscriptions = {s.newsletter_id: s for s in session.scalars(
        select(Subscription).where(Subscription.subscriber_id == subscriber.id))}
    mine = {newsletter_id: s.status for newsletter_id, s in subscriptions.items()}
    offered = []
    for n in session.scalars(select(Newsletter).order_by(Newsletter.name)):
        if n.status == "active" or mine.get(n.id) in ("active", "pending"):
            own = subscriptions.get(n.id)
            offered.append(Choice(n, mine.get(n.id) in ("active", "pending"), mine.get(n.id) == "pending",
                                  choices.topics_of(session, n), own.topics if own else None,
                                  own.frequency if own else "each"))
    return Preferences(subscriber, offered, suspension(session, subscriber))


def suspension(session: Session, subscriber: Subscriber) -> str | None:
    """Why no mail goes to this address, said to its owner; None when mail goes to it."""
    if subscriber.status not in ("bounced", "complained"):
        return None
    kind = "bounce" if subscriber.status == "bounced" else "complaint"
    at = session.scalar(select(func.max(SubscriberEvent.at)).where(
        SubscriberEvent.subscriber_id == subscriber.id, SubscriberEvent.kind == kind))
    when = f"On {at:%B} {at.day}, {at.year}, " if at else ""
    why = ("the mail server for this address told us it doesn't accept mail (the message bounced), "
           "so we stopped sending to it" if kind == "bounce" else
           "a message from us was reported as spam from this mailbox, so we stopped all mail to it")
    return (f"Mail to {subscriber.email} is suspended. {when}{why}. If that has changed or was a mistake, "
            "reply to any of our emails and we'll restore your subscriptions.")


def set_preferences(session: Session, subscriber_id: int, newsletter_ids: list[int],
                    now: datetime | None = None) -> Saved:
    """Save the preferences page: the newsletters in `newsletter_ids` on, every other one offered off.

    The link is the reader's own (it comes in mail to the address), so choosing a newsletter starts
    it at once, and brings back a reader who had left everything. An address that bounced or
    complained isn't mailed again from here: those choices are refused; leaving always works."""
    now = now or utcnow()
    current = preferences(session, subscriber_id)
    subscriber, offered = current.subscriber, {c.newsletter.id: c.newsletter for c in current.choices}
    if unknown := set(newsletter_ids) - set(offered):
        raise InvalidInput(f"no newsletter with id {sorted(unknown)} to choose; reload the page")
    subscriptions = {s.newsletter_id: s for s in session.scalars(
        select(Subscription).where(Subscription.subscriber_id == subscriber.id))}
    saved = Saved([], [], [])
    for newsletter_id, newsletter in offered.items():
        subscription = subscriptions.get(newsletter_id)
        status = subscription.status if subscription else None
        if newsletter_id in newsletter_ids and status != "active":
            if current.suspended:
                saved.refused.append(newsletter)
                continue
            if subscription is None:
                session.add(Subscription(subscriber_id=subscriber.id, newsletter_id=newsletter_id, status="active",
                                         created_at=now))
            else:
                if subscription.status == "unsubscribed":
                    choices.start_afresh(session, subscription)
                subscription.status, subscription.unsubscribed_at = "active", None
            saved.joined.append(newsletter)
            consent.record_event(session, subscriber.id, "subscribed", "web", newsletter_id=newsletter_id,
                                 detail="on the preferences page", now=now)
        elif newsletter_id not in newsletter_ids and status in ("active", "pending"):
            subscription.status, subscription.unsubscribed_at = "unsubscribed", now
            consent.skip_open_deliveries(session, subscriber.id, "unsubscribed before sending", newsletter_id)
            saved.left.append(newsletter)
            consent.record_event(session, subscriber.id, "unsubscribed", "web", newsletter_id=newsletter_id,
                                 detail="on the preferences page", now=now)
    if not newsletter_ids and subscriber.status not in consent.SUPPRESSED:
        # Unticking everything means what "Leave all newsletters" means, with the same protection: an import
        # can't add the address to another newsletter a minute later.
        consent.suppress(session, subscriber, "unsubscribed", "web", "left every newsletter from the preferences "
                         "page (no newsletter ticked)", now=now)
    if saved.joined and subscriber.status in ("pending", "unsubscribed"):
        kind = "resubscribed" if subscriber.status == "unsubscribed" else "confirmed"
        consent.record_event(session, subscriber.id, kind, "web", detail="on the preferences page", now=now)
        subscriber.status, subscriber.confirmed_at = "confirmed", now
    session.flush()
    return saved


def set_zone(session: Session, subscriber_id: int, zone: str | None, now: datetime | None = None) -> bool:
    """The reader's own time zone (None: each newsletter's), for newsletters sent at each reader's local time;
    an unknown one is refused before anything is saved. Whether it changed."""
    zone = zones.checked(zone)
    subscriber = _subscriber(session, subscriber_id)
    if subscriber.timezone == zone:
        return False
    subscriber.timezone = zone
    consent.record_event(session, subscriber.id, "time zone", "web", now=now,
                         detail=f"on the preferences page: {zone or 'none (each newsletter’s own)'}")
    return True


def leave_all(session: Session, subscriber_id: int, now: datetime | None = None, *, source: str = "web",
              detail: str = "left every newsletter from the preferences page") -> Subscriber:
    """Stop every newsletter to this address (suppressed as unsubscribed). Pressing it twice changes nothing.
    `source` and `detail` say on the timeline who did it: the reader by default, or an editor."""
    subscriber = _subscriber(session, subscriber_id)
    staying = session.scalar(select(func.count()).select_from(Subscription).where(
        Subscription.subscriber_id == subscriber.id, Subscription.status != "unsubscribed"))
    if subscriber.status in consent.SUPPRESSED and not staying:
        return subscriber
    was = subscriber.status
    consent.suppress(session, subscriber, "unsubscribed", source, detail, now=now)
    if was == "bounced":
        subscriber.status = was  # the address still bounces: leaving must not make it look deliverable again
    return subscriber


MAX_TOPIC_FIELDS = 500  # more topic boxes than any newsletter offers: a form this big wasn't sent by the page


def check_choices(session: Session, subscriber_id: int, topics: list[str], frequencies: list[str]
                  ) -> dict[int, tuple[list[str] | None, str]]:
    """The preferences form's topics and frequencies ("slug:topic", "slug:frequency"), checked before
    anything is saved: by newsletter id, (topics, frequency). A newsletter whose frequency the form didn't
    send keeps its choices (the page always sends it). Anything not offered is refused, saying what is."""
    if len(topics) > MAX_TOPIC_FIELDS or len(frequencies) > MAX_TOPIC_FIELDS:
        raise InvalidInput("that is more choices than the page offers; reload the page and choose again")
    offered = {c.newsletter.slug: c for c in preferences(session, subscriber_id).choices}
    chosen: dict[str, list[str]] = {}
    for value in topics:
        slug, _, topic = value.partition(":")
        if slug not in offered:
            raise InvalidInput("a topic was chosen for a newsletter this page doesn't offer; reload the page")
        chosen.setdefault(slug, []).append(topic)
    checked = {}
    for value in frequencies:
        slug, _, frequency = value.partition(":")
        if slug not in offered:
            raise InvalidInput("a frequency was chosen for a newsletter this page doesn't offer; reload the page")
        choice = offered[slug]
        checked[choice.newsletter.id] = (choices.check_topics(choice.newsletter, choice.offered, chosen.get(slug)),
                                         choices.check_frequency(frequency))
    return checked


def save_choices(session: Session, subscriber_id: int, checked: dict[int, tuple[list[str] | None, str]],
                 source: str = "web", now: datetime | None = None) -> list[Newsletter]:
    """Store checked choices on the reader's subscriptions (those they have); the newsletters that changed.
    The cursor stays: a reader who narrows their topics or slows down misses nothing already on its way."""
    changed = []
    for subscription in session.scalars(select(Subscription).where(Subscription.subscriber_id == subscriber_id,
                                                                   Subscription.newsletter_id.in_(checked))):
        topics, frequency = checked[subscription.newsletter_id]
        if (subscription.topics or None, subscription.frequency) == (topics, frequency):
            continue
        subscription.topics, subscription.frequency = topics, frequency
        changed.append(subscription.newsletter)
        consent.record_event(session, subscriber_id, "preferences", source, newsletter_id=subscription.newsletter_id,
                             detail=f"topics: {', '.join(topics) if topics else 'all'}; "
                                    f"{choices.FREQUENCIES[frequency].split(' (')[0]}", now=now)
    session.flush()
    return changed
