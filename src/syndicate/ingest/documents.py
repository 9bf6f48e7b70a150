"""A feed's bytes → entries: whatever feedparser understands, read defensively (no entity declarations, one
bad item never the rest), each item normalised — its story's link, title, lead, date and image."""

from __future__ import annotations

import calendar
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import unquote_plus, urljoin, urlsplit, urlunsplit
from xml.parsers import expat

import feedparser
from lxml import etree

from syndicate import links
from syndicate.errors import FeedError
from syndicate.ingest import content, language
from syndicate.text import UNTITLED, clean, shorten

TRACKING_PARAMS = ("utm_", "fbclid", "gclid", "mc_cid", "mc_eid")
IMAGE_ALT_MAX = 1000  # characters: X's alt text limit; Bluesky's alt and Mastodon's description (1,500) take more
MEDIA_RSS = ("http://search.yahoo.com/mrss/", "http://search.yahoo.com/mrss")


@dataclass
class Entry:
    """One item of a parsed feed, normalised."""

    identity: str
    url: str
    title: str
    content_html: str
    lead: str
    content_hash: str
    published_at: datetime | None
    author: str | None = None
    image_url: str | None = None
    image_alt: str | None = None  # what describes the picture (its alt, caption or Media RSS words), one line
    categories: list[str] = field(default_factory=list)
    guid: str | None = None  # only unique within its feed: stored under the feed's name
    link_problem: str | None = None  # why its own link was passed over (not a web address)
    language: str | None = None  # BCP 47: read off its words, else as its feed declares; None: unknown


# ── parsing ──────────────────────────────────────────────────────────────────


def canonical_url(url: str) -> str:
    """Strip tracking parameters and fragments; lower-case scheme and host.

    The other parameters are kept byte for byte, in order: decoding and re-encoding
    would merge links whose values aren't UTF-8, or rewrite ones that are fine.
    """
    parts = urlsplit(_trimmed(url))
    kept = [pair for pair in parts.query.split("&")
            if pair and not unquote_plus(pair.split("=", 1)[0]).lower().startswith(TRACKING_PARAMS)]
    return _trimmed(urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", "&".join(kept), "")))


_EDGES = re.compile(r"^[\s\x00-\x20]+|[\s\x00-\x20]+$")


def _trimmed(url: str) -> str:
    """Without surrounding whitespace or C0 controls — both at once: urlsplit drops leading C0 controls
    (as WHATWG URL parsing does), so trimming only whitespace could leave a new edge for the next pass."""
    return _EDGES.sub("", url)


def parse(body: bytes, base_url: str, content_type: str | None = None) -> list[Entry]:
    """The entries feedparser could read; a feed that is not a feed at all is an error."""
    return read(body, base_url, content_type).entries


@dataclass
class Document:
    """A feed as read: its entries, its own title (one line, or None), and the items that could not be
    read, each as "its title or link: why" (the others are stored all the same)."""

    entries: list[Entry]
    title: str | None
    skipped: list[str] = field(default_factory=list)


def read(body: bytes, base_url: str, content_type: str | None = None) -> Document:
    """The entries feedparser could read, and the feed's own title.

    Whatever the document does to the parser, the outcome is a FeedError on this feed, never
    a crash of the poll: the web holds documents nobody has seen yet. One item that breaks in a way
    nobody foresaw is skipped and said on the feed; the others are read.
    """
    try:
        return _parse(body, base_url, content_type)
    except FeedError:
        raise
    except Exception as e:  # noqa: BLE001 - see above
        raise FeedError(f"the feed could not be read ({type(e).__name__}: {e})") from e


def _parse(body: bytes, base_url: str, content_type: str | None) -> Document:
    refuse_entity_declarations(body)
    # No base address for feedparser: it would resolve relative links in a story against the
    # feed's address. It still applies xml:base; the rest is resolved against each item's link.
    headers = {}
    if content_type:
        headers["content-type"] = content_type  # its charset counts, as HTTP says
    # nh3 sanitises and content.sanitise resolves links afterwards: feedparser doing both
    # too (in pure Python) was two thirds of its cost.
    parsed = feedparser.parse(body, response_headers=headers, sanitize_html=False, resolve_relative_uris=False)
    if not parsed.entries and parsed.bozo and not parsed.feed.get("title"):
        problem = parsed.get("bozo_exception")
        reason = getattr(problem, "getMessage", lambda: None)() or str(problem)
        raise FeedError(f"not a feed (RSS/Atom could not be parsed: {reason})")
    if not parsed.entries and not parsed.feed and not parsed.get("version"):
        raise FeedError("not a feed: the document has no RSS or Atom channel")
    entries = parsed.entries
    if parsed.bozo:
        # In a broken (often truncated) document an item with neither id nor link is
        # most likely half an item: storing it would give a story without a home.
        entries = [e for e in entries if e.get("id") or e.get("link")]
    title = clean(content.plain_text(str(parsed.feed.get("title") or "")))[:500] or None  # Feed.title's size
    document = Document([], title)
    # A story linked to the feed itself or to the site's home page has no address of its own.
    home = str(parsed.feed.get("link") or "")
    not_the_story = frozenset(canonical_url(address) for address in (base_url, urljoin(base_url, home) if home else "")
                              if address)  # canonical once per feed, not per item
    media = media_descriptions(body)
    for e in entries:
        try:
            document.entries.append(_entry(e, base_url, not_the_story, media, parsed.feed.get("language")))
        except Exception as problem:  # noqa: BLE001 - this item only: the rest of the feed is read
            name = clean(str(e.get("title") or e.get("link") or e.get("id") or "an item"))[:80]
            document.skipped.append(f"{name!r}: {type(problem).__name__}: {str(problem)[:200]}")
    return document


class _PrologRead(Exception):
    """The root element has started: the document type declaration, if any, is behind us."""


def refuse_entity_declarations(body: bytes) -> None:
    """Feeds have no use for DTD entities; a document declaring them may be an expansion bomb.

    expat reads the prolog as XML does (any encoding it knows, comments, quoted ids)
    and stops at the root element; what it can't read is searched for the declaration
    in the common encodings instead.
    """
    def refuse(*_):
        raise FeedError("the document declares XML entities (an entity-expansion attack?): refused")

    def root_started(*_):
        raise _PrologRead

    parser = expat.ParserCreate()
    parser.EntityDeclHandler = refuse
    parser.StartElementHandler = root_started
    try:
        parser.Parse(body, True)
    except _PrologRead:
        return
    except expat.ExpatError:
        marker = "<!ENTITY"
        if any(marker.encode(codec) in body for codec in ("ascii", "utf-16-le", "utf-16-be")):
            refuse()


def _entry(e, base_url: str, not_the_story: frozenset[str] = frozenset(), media: dict[str, str] | None = None,
           feed_language: str | None = None) -> Entry:
    """A feedparser entry, read into `normalise`; `not_the_story`: the feed's own addresses, canonical;
    `media`: Media RSS's words for each picture, by address (`media_descriptions`); `feed_language`: what the
    feed declares for all its items (`<language>`, or `xml:lang` on the feed)."""
    media = media or {}
    link = urljoin(base_url, e.get("link", "")) if e.get("link") else ""
    # feedparser reads a media:description as the item's content (or its summary): a picture's words, not the story
    words = frozenset(media.values())
    summary_detail = e.get("summary_detail") or {}
    summary_detail = {} if (summary_detail.get("value") or "").strip() in words else summary_detail
    body, summary = {}, summary_detail
    contents = [c for c in e.get("content") or () if (c.get("value") or "").strip() not in words]
    if contents:
        body = max(contents, key=lambda c: len(c.get("value", "")))
    body = body or summary
    # An item's own dc:language, else the xml:lang its text was written under, else the feed's.
    declared = language.declared(e.get("language"), body.get("language"),
                                 (e.get("title_detail") or {}).get("language"), feed_language)
    image_url = _image(e)
    return normalise(
        link=link, guid=e.get("id"), title=e.get("title", ""), html=body.get("value", ""),
        summary=summary.get("value", ""), html_base=urljoin(link or base_url, body.get("base") or ""),
        published_at=_date(e), author=e.get("author"), image_url=image_url,
        categories=[t["term"] for t in e.get("tags", []) if t.get("term")],
        orig_link=e.get("feedburner_origlink"), not_the_story=not_the_story, declared_language=declared,
        image_alt=media.get(image_url or ""),
    )


def normalise(*, link: str, guid: str | None, title: str, html: str, summary: str = "", html_base: str = "",
              published_at: datetime | None = None, author: str | None = None, image_url: str | None = None,
              categories: list[str] | None = None, orig_link: str | None = None,
              not_the_story: frozenset[str] = frozenset(), declared_language: str | None = None,
              image_alt: str | None = None) -> Entry:
    """One story as syndicate keeps it, whether a feed carried it or a CMS pushed it.

    Relative links in the story resolve against `html_base` (its xml:base) or else its own page.
    `image_alt`: what the feed (Media RSS) or the CMS says of `image_url`.
    """
    base = html_base or link
    html = content.sanitise(html or summary, base_url=base)
    title = clean(content.plain_text(title))  # as the site wrote it: emoji, joiners and marks kept
    categories = [name for name in map(clean, categories or []) if name]
    lead = (content.lead(html, title=title, categories=categories)
            or content.lead(content.sanitise(summary, base_url=base), title=title, categories=categories))
    story_language = language.of_story(title, lead, declared_tag=declared_language)
    title = title or UNTITLED
    digest = hashlib.sha256(f"{title}\n{html}".encode()).hexdigest()
    guid = (guid or "").strip() or None
    url, link_problem = story_link(link, guid, orig_link=orig_link, not_the_story=not_the_story)
    identity = guid or url or f"sha256:{digest}"
    return Entry(
        identity=identity[:2048],
        guid=guid,
        url=url,
        link_problem=link_problem,
        title=title,
        content_html=html,
        lead=lead,
        content_hash=digest,
        published_at=published_at,
        author=clean(author or "") or None,
        **lead_image(image_url, image_alt, html),
        categories=categories,
        language=story_language,
    )


def lead_image(image_url: str | None, image_alt: str | None, html: str) -> dict:
    """The story's picture — the feed's (or CMS's) own, else the story's first <img> — and what describes it:
    its alt in the story, else the caption of its <figure>, else `image_alt` (what the feed or CMS says of its
    own picture); one line of plain text, at most IMAGE_ALT_MAX characters; None when nothing does."""
    given = links.href(image_url)
    found, said = content.picture(html, given or None)  # the feed's picture as the story shows it, else its first
    image = given or found
    words = said or (image_alt if given else None) or ""
    alt = shorten(clean(content.plain_text(words)), IMAGE_ALT_MAX)
    return {"image_url": image, "image_alt": alt or None}


def media_descriptions(body: bytes) -> dict[str, str]:
    """Media RSS's words for each picture, by its address: the media:description (else media:title) of a
    media:content or media:thumbnail, or of the media:group around it. feedparser reads a media:description
    as the item's own and drops media:title, so the document is read again for them, by lxml — only when it
    uses the namespace, with entities and the network off (the declarations were refused already)."""
    if b"search.yahoo.com/mrss" not in body:
        return {}
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, recover=True, huge_tree=False)
    try:
        root = etree.fromstring(body, parser)
    except (etree.LxmlError, ValueError):
        return {}
    found: dict[str, str] = {}
    for ns in MEDIA_RSS if root is not None else ():
        for element in root.iter(f"{{{ns}}}content", f"{{{ns}}}thumbnail"):
            url = (element.get("url") or "").strip()
            if not url or url in found:
                continue
            parent = element.getparent()
            words = _media_words(element, ns) or (
                _media_words(parent, ns) if parent is not None and parent.tag == f"{{{ns}}}group" else "")
            if words:
                found[url] = words
    return found


def _media_words(element, ns: str) -> str:
    for name in ("description", "title"):
        child = element.find(f"{{{ns}}}{name}")
        text = "".join(child.itertext()).strip() if child is not None else ""
        if text:
            return text
    return ""


def story_link(link: str, guid: str | None, *, orig_link: str | None = None,
               not_the_story: frozenset[str] = frozenset()) -> tuple[str, str | None]:
    """The story's own address, canonical: its link, else its guid (RSS's permalink), else FeedBurner's
    origLink; never the feed's own address or its home page (`not_the_story`, canonical): a story with none
    of its own has no address (""), gets no teaser, and the editor reads why on the feed. The second value
    says why its link was passed over (None when it wasn't).

    A guid is taken when it is a web address: RSS calls it a permalink unless marked otherwise, and one
    marked otherwise (WordPress's `?p=123`) still leads to the story.
    """
    problems = []
    for what, value in (("link", link), ("guid", guid), ("feedburner:origLink", orig_link)):
        if not value:
            continue
        try:
            url = canonical_url(links.web_link(value))
        except links.NotAWebLink as e:
            if what == "link":
                problems.append(str(e))
            continue
        if url in not_the_story:
            problems.append(f"its {what} is the feed's own address, not the story's")
            continue
        return url, f"{'; '.join(problems)}; its {what} is used instead" if problems else None
    return "", "; ".join(problems or ["it has no link to the story"]) + "; no teaser is posted for it"


def _date(e) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = e.get(key)
        if value:
            return datetime.fromtimestamp(calendar.timegm(value), UTC)
    return None


def _image(e) -> str | None:
    for key in ("media_content", "media_thumbnail"):
        for media in e.get(key, []):
            if media.get("url") and media.get("medium", "image") == "image":
                return media["url"]
    for enclosure in e.get("enclosures", []):
        if enclosure.get("type", "").startswith("image/") and enclosure.get("href"):
            return enclosure["href"]
    return None
