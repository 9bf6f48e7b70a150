"""The public archive of a newsletter: the editions that went out, as a page and as an Atom feed.

Only what `rendering.public_html` gives ever leaves here: no subscriber's links or tokens.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from syndicate.config import Settings
from syndicate.errors import NotFound
from syndicate.models import Edition, Newsletter
from syndicate.newsletters import editions, rendering

ATOM = "http://www.w3.org/2005/Atom"
FEED_ENTRIES = 20  # a feed reader needs the recent editions, not years of full HTML
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # characters XML 1.0 can't carry at all


def newsletter(session: Session, slug: str) -> Newsletter:
    found = session.scalar(select(Newsletter).where(Newsletter.slug == slug))
    if found is None:
        raise NotFound(f"there is no newsletter called {slug!r}")
    return found


def sent_editions(session: Session, newsletter: Newsletter, limit: int | None = None) -> list[Edition]:
    """Editions that went out (paused newsletters included), newest first; never drafts or cancelled ones."""
    return list(session.scalars(
        select(Edition).where(Edition.newsletter_id == newsletter.id, Edition.status.in_(editions.PUBLIC),
                              Edition.html != "")
        .order_by(Edition.number.desc()).limit(limit)))


def sent_at(edition: Edition) -> datetime:
    """When it went out, by the rule the masthead's date follows: the time it was scheduled for."""
    return edition.scheduled_for or edition.started_at or edition.cut_at or edition.created_at


def local_date(edition: Edition, newsletter: Newsletter) -> datetime:
    return sent_at(edition).astimezone(ZoneInfo(newsletter.timezone))


def atom(newsletter: Newsletter, sent: list[Edition], settings: Settings) -> bytes:
    """An Atom (RFC 4287) feed of `sent`, each entry's content the edition's public web view.

    Built with ElementTree, which escapes every text and attribute."""
    archive_url = f"{settings.base_url}/n/{newsletter.slug}"

    def add(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
        element = ET.SubElement(parent, tag, attributes)
        if text is not None:
            element.text = NOT_XML.sub("", text)
        return element

    feed = ET.Element("feed", xmlns=ATOM)  # Atom as the default namespace: unprefixed names throughout
    add(feed, "id", archive_url)
    add(feed, "title", newsletter.name)
    add(feed, "updated", (sent_at(sent[0]) if sent else newsletter.created_at).isoformat())
    add(feed, "link", rel="self", type="application/atom+xml", href=f"{archive_url}/feed.atom")
    add(feed, "link", rel="alternate", type="text/html", href=archive_url)
    add(add(feed, "author"), "name", newsletter.from_name)  # no address: a public feed is harvested for spam
    add(feed, "generator", "syndicate")
    for edition in sent:
        url = rendering.web_url(settings, newsletter, edition)
        entry = add(feed, "entry")
        add(entry, "id", url)
        add(entry, "title", edition.subject or f"{newsletter.name} #{edition.number}")
        add(entry, "published", sent_at(edition).isoformat())
        add(entry, "updated", sent_at(edition).isoformat())
        add(entry, "link", rel="alternate", type="text/html", href=url)
        add(entry, "content", rendering.public_html(edition, settings), type="html")
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)
