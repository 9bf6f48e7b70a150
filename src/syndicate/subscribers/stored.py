"""The subscribers as editors list them: every one, with the newsletters each gets.

Only the database here, none of the libraries that check addresses and write mail (consent.py):
`syndicate subscriber list` loads this module alone. Finding one subscriber (by address, by id, a search)
is consent.py's, since an address is read as consent reads it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from syndicate.models import Newsletter, Subscriber, Subscription


def all_subscribers(session: Session) -> list[tuple[Subscriber, list[str]]]:
    """Every subscriber, by id, each with the slugs of the newsletters they get (active subscriptions, by
    newsletter id; one still to be confirmed is left out): one query for the subscribers, one for the slugs."""
    slugs: dict[int, list[str]] = {}
    for subscriber_id, slug in session.execute(
            select(Subscription.subscriber_id, Newsletter.slug).join(Newsletter)
            .where(Subscription.status == "active").order_by(Subscription.subscriber_id, Subscription.newsletter_id)):
        slugs.setdefault(subscriber_id, []).append(slug)
    return [(s, slugs.get(s.id, [])) for s in session.scalars(select(Subscriber).order_by(Subscriber.id))]
