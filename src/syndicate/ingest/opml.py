"""Feeds in and out as OPML, the list every feed reader imports and exports (Feedly, Inoreader, NetNewsWire…).

An OPML file comes from elsewhere: it is parsed by defusedxml with no DTD allowed (no external entities, no
entity expansion: XXE and "billion laughs" are refused outright), and refused above MAX_BYTES. Each outline
with an xmlUrl is one feed, at any depth (readers nest them in folders); a bad address or a repeat is
reported with its line and the rest is imported. Adding the same file again adds nothing.
"""

from __future__ import annotations

import xml.sax
import xml.sax.handler
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import TextIO
from xml.sax.saxutils import quoteattr

import defusedxml.sax
import httpx
from defusedxml import DefusedXmlException
from sqlalchemy import select
from sqlalchemy.orm import Session

from syndicate.config import Settings
from syndicate.errors import FeedError, InvalidInput
from syndicate.ingest import fetch
from syndicate.ingest.feeds import add_feed, check_feed, find_feed
from syndicate.models import Feed, utcnow
from syndicate.text import clean, shorten

MAX_BYTES = 5 * 1024 * 1024  # an OPML of 10,000 feeds is ~2 MB
MAX_FEEDS = 10_000
CHECKS_AT_ONCE = 8  # feeds fetched at a time by --check: a slow server holds up one thread, not the list


@dataclass
class Outline:
    line: int
    url: str  # the xmlUrl as written
    title: str | None


@dataclass
class OpmlReport:
    added: list[tuple[int, str]] = field(default_factory=list)  # (feed id, url)
    known: list[tuple[int, str, str]] = field(default_factory=list)  # (line, url, why): added before, or a repeat
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # (line, url, why)

    def as_dict(self) -> dict:
        return {"added": [dict(id=i, url=u) for i, u in self.added],
                "known": [dict(line=li, url=u, reason=r) for li, u, r in self.known],
                "refused": [dict(line=li, url=u, reason=r) for li, u, r in self.refused]}


class _Outlines(xml.sax.handler.ContentHandler):
    def __init__(self):
        super().__init__()
        self.found: list[Outline] = []
        self.root: str | None = None
        self.locator = None

    def setDocumentLocator(self, locator):  # noqa: N802 - SAX's name
        self.locator = locator

    def startElement(self, name, attrs):  # noqa: N802 - SAX's name
        if self.root is None:
            self.root = name
        if name.lower() != "outline":
            return
        # Any depth: readers put feeds in folders, outlines without an xmlUrl. Attribute names as readers
        # write them: xmlUrl, though some write xmlurl or xmlURL.
        values = {key.lower(): value for key, value in attrs.items()}
        text = clean(values.get("title") or values.get("text") or "") or None
        if "xmlurl" in values:
            if len(self.found) >= MAX_FEEDS:
                raise InvalidInput(f"the file lists more than {MAX_FEEDS:,} feeds: split it; nothing was imported")
            self.found.append(Outline(self.locator.getLineNumber(), values["xmlurl"].strip(), text))


def read_opml(data: bytes) -> list[Outline]:
    """Every outline with an xmlUrl, in file order, with its line; a file that isn't OPML refused saying why."""
    if len(data) > MAX_BYTES:
        raise InvalidInput(f"the file is over {MAX_BYTES // 1024 // 1024} MB: an OPML list of feeds is far smaller; "
                           "is it the right file? nothing was imported")
    handler = _Outlines()
    try:
        defusedxml.sax.parseString(data, handler, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as e:
        raise InvalidInput(f"the file declares a DTD or entities ({type(e).__name__}), which an OPML file never "
                           "needs and which can make a parser read files or eat memory: export the list again "
                           "from the reader; nothing was imported") from e
    except xml.sax.SAXParseException as e:
        raise InvalidInput(f"line {e.getLineNumber()} of the file isn't well-formed XML ({e.getMessage()}): "
                           "export it again from the reader; nothing was imported") from e
    if (handler.root or "").lower() != "opml":
        raise InvalidInput(f"this is XML but not OPML (its root is <{handler.root}>): give the file the reader's "
                           "'export OPML' wrote; nothing was imported")
    return handler.found


def import_opml(session: Session, data: bytes, *, checked: dict[int, str] | None = None) -> OpmlReport:
    """Add the feeds of an OPML file (read_opml), each once: an address refused by the fetcher's rules, a
    repeat or a feed added before is reported with its line, the others added in the caller's transaction
    with the outline's title until their first poll brings the feed's own. `checked`: line → why a fetch
    refused it (check_outlines), left out too."""
    report = OpmlReport()
    seen: dict[str, int] = {}
    for outline in read_opml(data):
        try:
            url = fetch.check_url(outline.url)
        except InvalidInput as e:
            report.refused.append((outline.line, outline.url, str(e)))
            continue
        if url in seen:
            report.known.append((outline.line, url, f"repeats line {seen[url]}"))
            continue
        seen[url] = outline.line
        if checked and outline.line in checked:
            report.refused.append((outline.line, url, str(checked[outline.line])))
            continue
        if (feed := find_feed(session, url)) is not None:
            report.known.append((outline.line, url, f"added already (feed {feed.id})"))
            continue
        feed = add_feed(session, url)
        feed.title = shorten(outline.title, 500) if outline.title else None
        report.added.append((feed.id, url))
    return report


def check_outlines(outlines: list[Outline], settings: Settings,
                   progress: Callable[[int, int], object] | None = None) -> dict[int, str]:
    """Fetch each outline's feed once, CHECKS_AT_ONCE at a time over one guarded client: line → why it
    won't do, for those that fail (check_feed's words). `progress(done, total)` after each."""
    def one(outline: Outline) -> tuple[int, str | None]:
        try:
            check_feed(outline.url, settings, http)
        except (FeedError, InvalidInput) as e:
            return outline.line, str(e)
        return outline.line, None

    limits = httpx.Limits(max_connections=CHECKS_AT_ONCE, max_keepalive_connections=CHECKS_AT_ONCE)
    with fetch.client(settings.allow_private_feeds, settings.feed_timeout, limits) as http, \
            ThreadPoolExecutor(CHECKS_AT_ONCE, thread_name_prefix="opml-check") as pool:
        failed = {}
        for done, (line, why) in enumerate(pool.map(one, outlines), start=1):
            if why:
                failed[line] = why
            if progress is not None:
                progress(done, len(outlines))
        return failed


# ── export ───────────────────────────────────────────────────────────────────


def export_opml(session: Session, out: TextIO, now: datetime | None = None) -> int:
    """Every active feed as OPML 2.0 (title, xmlUrl), for another reader to import; returns how many."""
    feeds = session.scalars(select(Feed).where(Feed.status == "active").order_by(Feed.id)).all()
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">\n  <head>\n'
              "    <title>syndicate feeds</title>\n"
              f"    <dateCreated>{format_datetime(now or utcnow(), usegmt=True)}</dateCreated>\n"
              "  </head>\n  <body>\n")
    for feed in feeds:
        # clean: a title is outside text, and XML 1.0 has no way to write most control characters at all
        title = quoteattr(clean(feed.title or "") or feed.url)
        out.write(f'    <outline type="rss" text={title} title={title} xmlUrl={quoteattr(feed.url)}/>\n')
    out.write("  </body>\n</opml>\n")
    return len(feeds)
