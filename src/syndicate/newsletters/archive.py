"""The public archive of a newsletter: the editions that went out, as a page and as an Atom feed.

Only what `rendering.public_of` gives ever leaves here: no subscriber's links or tokens. A story withdrawn
since an edition went out is not shown in it any more: its web view and feed entry are rendered again with a
short notice in the story's place, and a subject that named the story names the edition instead.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from syndicate import i18n
from syndicate.config import Settings
from syndicate.errors import NotFound
from syndicate.models import Article, Edition, EditionArticle, Newsletter
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
        .options(selectinload(Edition.items).selectinload(EditionArticle.article))  # each one's withdrawn stories
        .order_by(Edition.number.desc()).limit(limit)))


def sent_at(edition: Edition) -> datetime:
    """When it went out, by the rule the masthead's date follows: the time it was scheduled for."""
    return edition.scheduled_for or edition.started_at or edition.cut_at or edition.created_at


def local_date(edition: Edition, newsletter: Newsletter) -> datetime:
    return sent_at(edition).astimezone(ZoneInfo(newsletter.timezone))


# ── what a withdrawn story leaves ────────────────────────────────────────────


def withdrawn(edition: Edition) -> list[Article]:
    return [item.article for item in edition.items if item.article.withdrawn_at is not None]


def notice(article: Article, newsletter: Newsletter) -> str:
    on = article.withdrawn_at.astimezone(ZoneInfo(newsletter.timezone))
    _ = i18n.translations(newsletter.language).gettext  # in the edition's own language, like the rest of it
    return _("This story was withdrawn by the editors on %(date)s.") % {
        "date": i18n.long_date(on, newsletter.language)}


def subject(edition: Edition) -> str:
    """The edition's subject as the archive shows it: as it was mailed, unless a story of it was withdrawn
    since — then the template's subject over the stories left (an editor's own subject, which may name the
    story in any words: the edition's name). Whether the mailed subject names the story can't be told: the
    site may have edited the headline since, or the template shortened it."""
    newsletter, gone = edition.newsletter, withdrawn(edition)
    fallback = f"{newsletter.name} #{edition.number}"
    if not gone:
        return edition.subject or fallback
    kept = [item.article for item in edition.items if item.article.withdrawn_at is None]
    if edition.custom_subject or not kept:
        return fallback
    return rendering.render_subject(newsletter, edition, kept)


def public_html(edition: Edition, settings: Settings) -> str:
    """The web view (and a feed entry's content): as mailed; with a story withdrawn since, rendered again from
    the template with a short notice in that story's place — the stored HTML still holds it, and everything
    of it (headline, lead, picture, the preheader and the title) has to go."""
    gone = withdrawn(edition)
    if not gone:
        return rendering.public_html(edition, settings)
    newsletter = edition.newsletter
    shown = [Article(title=notice(a, newsletter), url="", lead="", categories=[], author=None, image_url=None,
                     published_at=a.published_at) if a.withdrawn_at is not None else a
             for a in (item.article for item in edition.items)]
    # A withdrawn story's blurb goes with it: the editor's words about it may name it.
    blurbs = {item.article_id: item.blurb for item in edition.items if item.article.withdrawn_at is None}
    return rendering.public_of(rendering.render_html(newsletter, edition, shown, settings, subject(edition),
                                                     blurbs), settings)


def updated(edition: Edition) -> datetime:
    """When the entry last changed: when it went out, or when a story of it was withdrawn (feed readers then
    fetch it again, without the story)."""
    return max([sent_at(edition), *(a.withdrawn_at for a in withdrawn(edition))])


# ── the Atom feed ────────────────────────────────────────────────────────────


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
    add(feed, "updated", max((updated(e) for e in sent), default=newsletter.created_at).isoformat())
    add(feed, "link", rel="self", type="application/atom+xml", href=f"{archive_url}/feed.atom")
    add(feed, "link", rel="alternate", type="text/html", href=archive_url)
    add(add(feed, "author"), "name", newsletter.from_name)  # no address: a public feed is harvested for spam
    add(feed, "generator", "syndicate")
    for edition in sent:
        url = rendering.web_url(settings, newsletter, edition)
        entry = add(feed, "entry")
        add(entry, "id", url)
        add(entry, "title", subject(edition))
        add(entry, "published", sent_at(edition).isoformat())
        add(entry, "updated", updated(edition).isoformat())
        add(entry, "link", rel="alternate", type="text/html", href=url)
        add(entry, "content", public_html(edition, settings), type="html")
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)
