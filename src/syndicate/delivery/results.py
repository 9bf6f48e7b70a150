"""What an edition did, in numbers an editor compares: unsubscribes, bounces and complaints as rates of the
mail delivered, clicks per story (newsletters.clicks: counted per link, never per reader), the send's pace
minute by minute, and the same rates across a newsletter's last editions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syndicate.delivery import deliveries
from syndicate.models import Delivery, Edition, EditionLink
from syndicate.newsletters import clicks

RATES = ("unsubscribed", "bounced", "complained")


def rates(report: dict[str, int]) -> dict:
    """From deliveries.report: each of RATES as a share of the messages delivered (None with none delivered)."""
    delivered = report.get("sent", 0)
    found = {"unsubscribed": report.get("unsubscribed since", 0), "bounced": report.get("bounced", 0),
             "complained": report.get("complained", 0)}
    return dict(delivered=delivered, **found,
                rates={k: (n / delivered if delivered else None) for k, n in found.items()})


def of_edition(session: Session, edition: Edition) -> dict:
    """An edition's rates, its clicks per story (if its newsletter counted them) and the send per minute."""
    links = clicks.per_link(session, edition.id)
    total = sum(link["clicks"] for link in links)
    result = rates(deliveries.report(session, edition))
    return result | dict(
        counts_clicks=bool(links), clicks=total, links=links,
        click_rate=(total / result["delivered"]) if links and result["delivered"] else None,
        sent_per_minute=sent_per_minute(session, edition.id))


def sent_per_minute(session: Session, edition_id: int) -> list[tuple[datetime, int]]:
    """Messages the mail server took, per minute from the first to the last (minutes with none included)."""
    if session.get_bind().dialect.name == "postgresql":
        minute = func.to_char(func.timezone("UTC", Delivery.sent_at), "YYYY-MM-DD HH24:MI")
    else:  # SQLite keeps UTC text: its first 16 characters are the minute
        minute = func.strftime("%Y-%m-%d %H:%M", Delivery.sent_at)
    rows = session.execute(select(minute, func.count()).where(Delivery.edition_id == edition_id,
                                                              Delivery.sent_at.is_not(None))
                           .group_by(minute).order_by(minute)).all()
    counted = {datetime.strptime(m, "%Y-%m-%d %H:%M").replace(tzinfo=UTC): n for m, n in rows}
    if not counted:
        return []
    first, last = min(counted), max(counted)
    span = int((last - first).total_seconds() // 60) + 1
    if span > 24 * 60:  # a send spread over days (resends): only the minutes that sent something
        return sorted(counted.items())
    return [(first + timedelta(minutes=m), counted.get(first + timedelta(minutes=m), 0)) for m in range(span)]


def across(session: Session, newsletter_id: int, last: int = 12) -> list[dict]:
    """The newsletter's last editions that went out, oldest first: number, delivered, rates and click rate."""
    sent = session.scalars(select(Edition).where(Edition.newsletter_id == newsletter_id,
                                                 Edition.started_at.is_not(None))
                           .order_by(Edition.number.desc()).limit(last)).all()
    counted = dict(session.execute(
        select(EditionLink.edition_id, func.sum(EditionLink.clicks))
        .where(EditionLink.edition_id.in_([e.id for e in sent])).group_by(EditionLink.edition_id)).all())
    found = []
    for edition in reversed(sent):
        result = rates(deliveries.report(session, edition))
        total = counted.get(edition.id)
        found.append(dict(id=edition.id, number=edition.number, sent_at=edition.sent_at or edition.started_at,
                          **result, clicks=total,
                          click_rate=(total / result["delivered"]) if total is not None and result["delivered"]
                          else None))
    return found
