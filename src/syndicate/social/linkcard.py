"""The link card of an article: what X, Mastodon and Bluesky will show under a teaser.

Read once before a teaser is scheduled, so an editor sees a broken page or a missing picture
while there is still time to fix it, and again for Bluesky, which wants the picture's bytes
(it does not unfurl links itself). Pages are fetched like feeds — through `fetch.guarded_get`, with its
guard against addresses inside our network, its redirect limit, deadline and size cap — because
an article URL comes from a feed, and a feed is whatever someone typed.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import urljoin

import httpx
from lxml import etree

from syndicate.errors import FeedError, InvalidInput, SyndicateError
from syndicate.ingest import fetch
from syndicate.links import NotAWebLink, web_link
from syndicate.text import clean, shorten

MAX_TITLE = 300
MAX_DESCRIPTION = 1000
PAGE_ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"
IMAGE_ACCEPT = "image/webp,image/png,image/jpeg,image/gif;q=0.9"
HTML_TYPES = ("text/html", "application/xhtml+xml")
# Servers that don't know what they store (S3's default) still serve real pictures; the bytes decide.
IMAGE_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")
CHARSET_SNIFF = 16_384  # bytes searched for <meta charset>; a WordPress head declares it in the first line


@dataclass(frozen=True)
class Card:
    url: str  # the page, after permanent redirects (a temporary one may move again: the article's address stands)
    title: str
    description: str
    image_url: str | None  # absolute, http(s) only
    card_type: str | None  # twitter:card, as the page asks for it ("summary_large_image", "summary", …)
    image: bytes | None = None  # the picture itself, when asked for and it could be fetched
    image_type: str | None = None  # what its bytes are (image/jpeg, image/png, image/webp, image/gif)


class PageUnreachable(SyndicateError):
    """The article's page could not be read; the message says why. The teaser can still go, without a card."""

    def __init__(self, message: str, *, status: int | None = None, retry_at: datetime | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status, when the server answered
        self.retry_at = retry_at  # from Retry-After, on a 429 or 503


def preflight(http: httpx.Client, url: str, *, deadline: float, fetch_image: bool = True,
              max_page_bytes: int = 2_000_000, max_image_bytes: int = 1_000_000,
              now: datetime | None = None) -> Card:
    """The card for `url`, read by `deadline` (time.monotonic()) — page and picture together.

    A page that can't be read raises PageUnreachable; a picture that can't be fetched only
    leaves `image` None, since a card without a picture is still a card.
    """
    now = now or datetime.now(UTC)
    try:
        # As a URI: a story stored before links were converted at ingest may still have an IRI for its address.
        url = fetch.check_url(web_link(url))
    except InvalidInput as e:
        raise PageUnreachable(f"the article's address {url!r} is not an http(s) address") from e
    try:
        page = fetch.guarded_get(http, url, headers={"Accept": PAGE_ACCEPT}, deadline=deadline,
                                 max_bytes=max_page_bytes, now=now)
    except FeedError as e:
        raise PageUnreachable(f"the article's page ({url}) could not be fetched: {e}") from e
    if page.status != 200:
        raise PageUnreachable(f"the article's page answered {page.status} {_reason(page.status)} ({url})",
                              status=page.status, retry_at=page.retry_after)
    mime, charset = content_type(page.headers.get("content-type", "") if page.headers else "")
    if mime not in HTML_TYPES and not (mime == "" and _looks_like_html(page.body)):
        raise PageUnreachable(f"the article's page is not HTML but {mime or 'of no stated type'} ({url})")
    # Links in the page resolve against where it really came from; the card keeps the article's address.
    # A redirect's Location may be an IRI too: both as URIs.
    came_from = _absolute(page.final_url or page.url, url) or url
    card = replace(parse(page.body, came_from, charset=charset), url=_absolute(page.url, url) or url)
    if not (fetch_image and card.image_url):
        return card
    image, image_type = _fetch_image(http, card.image_url, referer=came_from, deadline=deadline,
                                     max_bytes=max_image_bytes, now=now)
    return replace(card, image=image, image_type=image_type)


def parse(html: bytes | str, page_url: str, *, charset: str | None = None) -> Card:
    """The card a page's head describes (without the picture's bytes).

    `charset` is the one the Content-Type header named; as in browsers it wins over the page's
    own <meta charset>, and utf-8 (bad bytes replaced) is the last resort.
    """
    text = html if isinstance(html, str) else decode(html, charset)
    head = _head(text)
    base = _absolute(head.base, page_url) or page_url
    title = _first(head.meta, "og:title", "twitter:title") or clean(head.title or "")
    description = _first(head.meta, "og:description", "twitter:description", "description")
    return Card(
        url=page_url,
        title=shorten(title, MAX_TITLE),
        description=shorten(description, MAX_DESCRIPTION),
        image_url=_image_url(head.meta, base),
        card_type=head.meta.get("twitter:card", "").lower() or None,
    )


# ── the page's head ──────────────────────────────────────────────────────────


@dataclass
class _Tags:
    meta: dict[str, str] = field(default_factory=dict)  # lower-cased property or name → first non-empty content
    title: str | None = None
    base: str | None = None


# Where the body begins: nothing a card needs comes after, and a long article need not be parsed.
# (A "</head>" written inside a script in the head would end it early; no page worth a card does that.)
_HEAD_END = re.compile(r"</head\s*>|<body[\s>/]", re.IGNORECASE)


def _head(text: str) -> _Tags:
    """The meta tags, <title> and <base href> before the body.

    libxml2's HTML parser (lxml) rather than the stdlib's: it recovers from malformed markup the way
    browsers roughly do, decodes entities, and stays linear on hostile input — html.parser takes
    minutes on two megabytes of "<a " repeated.
    """
    end = _HEAD_END.search(text)
    data = (text[: end.start()] if end else text).encode("utf-8", errors="replace")
    tags = _Tags()
    # Decoded here already: libxml2 is told utf-8, so an <?xml encoding=…?> in the page can't mislead it.
    parser = etree.HTMLParser(encoding="utf-8", recover=True, no_network=True, remove_comments=True,
                              remove_pis=True, default_doctype=False)
    try:
        root = etree.fromstring(data, parser) if data.strip() else None
    except etree.LxmlError:  # nothing libxml2 could make a document of: a page without a head
        root = None
    for element in root.iter("meta", "title", "base") if root is not None else ():
        if element.tag == "meta":
            _meta(tags.meta, element.attrib)
        elif element.tag == "title" and tags.title is None:
            tags.title = "".join(element.itertext())
        elif element.tag == "base" and tags.base is None:
            tags.base = element.get("href")
    return tags


def _meta(meta: dict[str, str], attrs) -> None:
    # Twitter's old markup put the value in value=, and plenty of pages still do.
    content = clean(attrs.get("content") or attrs.get("value") or "")
    if not content:
        return
    # Open Graph says property=, Twitter says name=; both are seen with either, and in any case.
    for attribute in ("property", "name"):
        key = (attrs.get(attribute) or "").strip().lower()
        if key:
            meta.setdefault(key, content)


def _first(meta: dict[str, str], *keys: str) -> str:
    return next((meta[key] for key in keys if key in meta), "")


def _image_url(meta: dict[str, str], base: str) -> str | None:
    """og:image — its https twin when the page offers one — else twitter:image; only an http(s) address."""
    secure = _absolute(meta.get("og:image:secure_url"), base)
    if secure and secure.startswith("https:"):
        return secure
    for key in ("og:image", "og:image:url", "twitter:image", "twitter:image:src"):
        url = _absolute(meta.get(key), base)
        if url:
            return url
    return None


def _absolute(url: str | None, base: str) -> str | None:
    """`url` resolved against `base`, if that makes it an http(s) address (not data:, not javascript:), as a
    URI: pages write og:image as they write any link, with a path like /images/東京.jpg or an IDN host, and
    it is fetched (and shown to editors) as the server knows it — converted as story links are at ingest."""
    if not url or not url.strip():
        return None
    try:
        return fetch.check_url(web_link(urljoin(base, url.strip())))
    except (InvalidInput, ValueError):  # ValueError: a malformed address, such as an unclosed IPv6 bracket
        return None


# ── charsets and content types ───────────────────────────────────────────────

# What browsers do with these labels (WHATWG Encoding): Latin-1 and ASCII pages are really
# windows-1252 — their curly quotes in 0x80–0x9F would be lost otherwise — and so on.
_AS_BROWSERS_DO = {"iso8859-1": "cp1252", "ascii": "cp1252", "iso8859-9": "cp1254", "iso8859-11": "cp874",
                   "tis-620": "cp874", "gb2312": "gbk", "euc_kr": "cp949", "shift_jis": "cp932"}
# Python codecs that no web page is in; utf-7 is refused by browsers, as a way to smuggle markup.
_NOT_FOR_PAGES = {"utf-7", "idna", "punycode", "raw-unicode-escape", "unicode-escape", "undefined"}
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_META_CHARSET = re.compile(rb"""<meta\b[^>]{0,512}?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)


def decode(body: bytes, charset: str | None = None) -> str:
    """The page as text: a byte-order mark, else the header's charset, else <meta charset>, else utf-8."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom):].decode(name, errors="replace")
    name = _codec(charset)
    if name is None:
        found = _META_CHARSET.search(body[:CHARSET_SNIFF])
        name = _codec(found.group(1).decode("ascii")) if found else None
        # A page that could declare itself in ASCII is not UTF-16, whatever it says.
        if name and name.startswith(("utf-16", "utf-32")):
            name = "utf-8"
    try:
        return body.decode(name or "utf-8", errors="replace")
    except (LookupError, UnicodeError):
        return body.decode("utf-8", errors="replace")


def _codec(label: str | None) -> str | None:
    """The Python codec for a charset label from the web, or None if it names none we should use."""
    if not label:
        return None
    try:
        info = codecs.lookup(label.strip().strip("\"'"))
    except LookupError:
        return None
    if not info._is_text_encoding or info.name in _NOT_FOR_PAGES:  # rot13 and hex are codecs too
        return None
    return _AS_BROWSERS_DO.get(info.name, info.name)


def content_type(value: str) -> tuple[str, str | None]:
    """A Content-Type header as (media type, charset): ("text/html", "utf-8")."""
    mime, _, params = value.partition(";")
    found = _CHARSET_PARAM.search(params)
    return mime.strip().lower(), found.group(1) if found else None


def _looks_like_html(body: bytes) -> bool:
    """For a server that states no type at all: does the body begin like a web page?"""
    start = body[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<!--"))


def _reason(status: int) -> str:
    return httpx.codes.get_reason_phrase(status) or "(no reason given)"


# ── the picture ──────────────────────────────────────────────────────────────

_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
          (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


def image_type(data: bytes) -> str | None:
    """What the bytes are, from their first few — a server calling a PNG "image/jpeg" is common,
    and Bluesky wants the true type with the blob."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _fetch_image(http: httpx.Client, url: str, *, referer: str, deadline: float, max_bytes: int,
                 now: datetime) -> tuple[bytes | None, str | None]:
    """The picture and its type, or (None, None) — never an error: the card stands without it."""
    headers = {"Accept": IMAGE_ACCEPT}
    try:
        # Referer: image CDNs that refuse hotlinking accept their own site's pages. As a URI: a page address
        # with non-ASCII in it (an IRI, as stories stored before issue 15 have) can't go in a header.
        headers["Referer"] = web_link(referer)
    except NotAWebLink:
        pass
    try:
        answer = fetch.guarded_get(http, url, headers=headers, deadline=deadline, max_bytes=max_bytes, now=now)
    except FeedError:  # too large, too slow, refused address, unreachable
        return None, None
    declared, _ = content_type(answer.headers.get("content-type", "") if answer.headers else "")
    if answer.status != 200 or not declared.startswith(IMAGE_TYPES):
        return None, None
    found = image_type(answer.body)
    return (answer.body, found) if found else (None, None)
