"""The newsletters and their editions as editors list them: every newsletter; the editions, newest first;
one edition by its id; a newsletter's latest number. The desk, its API and the CLI read them with these
queries.

Only the database here, none of the libraries that render and check editions: `syndicate newsletter list`
and `syndicate edition list` load this module and not editions.py or lists.py (bench/cli.py times them).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syndicate import db
from syndicate.models import Edition, Newsletter


def all_newsletters(session: Session, by: str = "name") -> list[Newsletter]:
    """Every newsletter, paused ones too: by name, as editors see them listed, or by slug (`by="slug"`)."""
    order = {"name": Newsletter.name, "slug": Newsletter.slug}[by]
    return list(session.scalars(select(Newsletter).order_by(order)))


def recent_editions(session: Session, slug: str | None = None, statuses: tuple[str, ...] | list[str] = (),
                    limit: int | None = None) -> list[Edition]:
    """Editions, the newest first (by id): of the newsletter `slug` only, if given; with one of `statuses`
    only, if any; at most `limit` of them (None: all)."""
    query = select(Edition).join(Newsletter).order_by(Edition.id.desc()).limit(limit)
    if slug:
        query = query.where(Newsletter.slug == slug)
    if statuses:
        query = query.where(Edition.status.in_(statuses))
    return list(session.scalars(query))


def edition_by_id(session: Session, edition_id: int, missing: str | None = None) -> Edition:
    """The edition; NotFound, saying `missing` (where to find the ids) or its id, otherwise."""
    return db.row(session, Edition, edition_id, missing or f"no edition {edition_id}")


def last_edition_number(session: Session, newsletter: Newsletter) -> int | None:
    """The number of the newsletter's latest edition; None before its first."""
    return session.scalar(select(func.max(Edition.number)).where(Edition.newsletter_id == newsletter.id))


def without_postal_address(session: Session, settings) -> list[Newsletter]:
    """The newsletters that send (any not archived) whose mail would carry no postal address, which
    bulk-mail rules such as CAN-SPAM require: neither their own nor SYNDICATE_POSTAL_ADDRESS. What `run`, a
    worker's start and the desk warn about."""
    if settings.postal_address:
        return []
    return list(session.scalars(select(Newsletter).where(Newsletter.status != "archived",
                                                         Newsletter.postal_address == "")
                                .order_by(Newsletter.slug)))


def postal_address_warning(newsletters: list[Newsletter]) -> str:
    """One line for an operator's console or log: who sends without an address, and the two ways to fix it."""
    names = ", ".join(newsletter.slug for newsletter in newsletters)
    return (f"no postal address: {names} would send mail without one, which bulk-mail rules (CAN-SPAM) require; "
            "set SYNDICATE_POSTAL_ADDRESS, or give each its own (`syndicate newsletter edit SLUG "
            "--postal-address '…'`, or the desk's newsletter page)")
