"""A subscriber's story, in order: what they signed up for, every edition delivered, skipped (why)
or failed (the server's reply), and what happened to the address (bounces, complaints)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syndicate.models import Delivery, Edition, Newsletter, SubscriberEvent, Subscription

WHAT = {  # delivery statuses as an editor says them
    "sent": "delivered", "skipped": "skipped", "failed": "failed", "deferred": "deferred (will retry)",
    "pending": "waiting to be sent", "waiting": "waiting for their local time", "sending": "being sent",
}


@dataclass
class Entry:
    at: datetime
    what: str  # delivered | skipped | failed | … | subscribed | confirmed | bounce | complaint | …
    newsletter: str | None
    edition: int | None
    detail: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def timeline(session: Session, subscriber_id: int) -> list[Entry]:
    entries = [
        Entry(at=d.sent_at or d.claimed_at or d.next_attempt_at or d.created_at, what=WHAT.get(d.status, d.status),
              newsletter=slug, edition=number, detail=d.last_reply if d.status != "sent" else subject)
        for d, slug, number, subject in session.execute(
            select(Delivery, Newsletter.slug, Edition.number, Edition.subject)
            .join(Edition, Edition.id == Delivery.edition_id).join(Newsletter, Newsletter.id == Edition.newsletter_id)
            .where(Delivery.subscriber_id == subscriber_id))
    ]
    # An event about a delivery (a bounce report, a complaint) names the edition it was about.
    about = select(Delivery.id, Edition.number, Edition.newsletter_id).join(Edition).subquery()
    entries += [
        Entry(at=e.at, what=e.kind.replace("_", " "), newsletter=slug, edition=number,
              detail=" — ".join(filter(None, [f"via {e.source}", e.detail])))
        for e, slug, number in session.execute(
            select(SubscriberEvent, Newsletter.slug, about.c.number)
            .outerjoin(about, about.c.id == SubscriberEvent.delivery_id)
            .outerjoin(Newsletter, Newsletter.id == func.coalesce(SubscriberEvent.newsletter_id,
                                                                  about.c.newsletter_id))
            .where(SubscriberEvent.subscriber_id == subscriber_id))
    ]
    return sorted(entries, key=lambda entry: entry.at)


def subscriptions(session: Session, subscriber_id: int) -> list[dict]:
    return [dict(newsletter=slug, status=s.status, since=s.created_at, unsubscribed_at=s.unsubscribed_at,
                 topics=s.topics or [], frequency=s.frequency)
            for s, slug in session.execute(
                select(Subscription, Newsletter.slug).join(Newsletter)
                .where(Subscription.subscriber_id == subscriber_id).order_by(Newsletter.slug))]
