"""feed → article: fetch politely, parse whatever feedparser understands, store each story once."""

from __future__ import annotations

import calendar
import hashlib
import ipaddress
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import feedparser
import httpx
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from syndicate import USER_AGENT, content
from syndicate.config import Settings
from syndicate.errors import FeedError, InvalidInput
from syndicate.models import Article, Feed, utcnow
from syndicate.templating import one_line

TRACKING_PARAMS = ("utm_", "fbclid", "gclid", "mc_cid", "mc_eid")
MAX_REDIRECTS = 5
MAX_BACKOFF = timedelta(hours=24)
ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.8"


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
    categories: list[str] = field(default_factory=list)


@dataclass
class PollResult:
    feed_id: int
    url: str
    status: str  # "ok", "not-modified", "error", "gone"
    new_article_ids: list[int] = field(default_factory=list)
    updated: int = 0
    error: str | None = None


# ── feeds ────────────────────────────────────────────────────────────────────


def check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{url!r} is not a feed address: give a full http:// or https:// URL")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


def add_feed(session: Session, url: str) -> Feed:
    url = check_url(url)
    feed = session.scalar(select(Feed).where(Feed.url == url))
    if feed is None:
        feed = Feed(url=url)
        session.add(feed)
        session.flush()
    return feed


# ── fetching ─────────────────────────────────────────────────────────────────


def guard_host(url: str, settings: Settings) -> None:
    """Refuse feed URLs that point inside our own network (SSRF)."""
    if settings.allow_private_feeds:
        return
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise FeedError(f"cannot resolve {host!r}: {e.strerror}") from e
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            raise FeedError(
                f"{host} resolves to {address}, a private or local address; feeds must be on the "
                "public internet (set SYNDICATE_ALLOW_PRIVATE_FEEDS=1 to allow local feeds)"
            )


@dataclass
class Fetched:
    status: int
    url: str  # after permanent redirects
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    retry_after: datetime | None = None


def fetch(feed: Feed, settings: Settings, now: datetime) -> Fetched:
    """GET the feed with a deadline and a size cap, following redirects by hand to re-check each hop."""
    headers = {"User-Agent": USER_AGENT, "Accept": ACCEPT}
    if feed.etag:
        headers["If-None-Match"] = feed.etag
    if feed.last_modified:
        headers["If-Modified-Since"] = feed.last_modified
    url, permanent_url = feed.url, feed.url
    timeout = httpx.Timeout(settings.feed_timeout, connect=min(10.0, settings.feed_timeout))
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            guard_host(url, settings)
            try:
                with client.stream("GET", url, headers=headers) as response:
                    if response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers:
                        target = urljoin(url, response.headers.get("location", ""))
                        if response.status_code in (301, 308) and url == permanent_url:
                            permanent_url = check_url(target)
                        url = check_url(target)
                        continue
                    body = _read_capped(response, settings.feed_max_bytes) if response.status_code == 200 else b""
                    return Fetched(
                        status=response.status_code,
                        url=permanent_url,
                        body=body,
                        etag=response.headers.get("etag"),
                        last_modified=response.headers.get("last-modified"),
                        retry_after=_retry_after(response.headers.get("retry-after"), now),
                    )
            except httpx.TimeoutException as e:
                raise FeedError(f"no answer within {settings.feed_timeout:g} s ({type(e).__name__})") from e
            except httpx.HTTPError as e:
                raise FeedError(f"cannot fetch: {e}") from e
    raise FeedError(f"more than {MAX_REDIRECTS} redirects")


def _read_capped(response: httpx.Response, limit: int) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():  # decompressed: a gzip bomb hits the cap too
        size += len(chunk)
        if size > limit:
            raise FeedError(f"feed is larger than {limit:,} bytes; refusing to read more")
        chunks.append(chunk)
    return b"".join(chunks)


def _retry_after(value: str | None, now: datetime) -> datetime | None:
    if not value:
        return None
    if value.strip().isdigit():
        return now + timedelta(seconds=int(value))
    try:
        return parsedate_to_datetime(value).astimezone(UTC)
    except (TypeError, ValueError):
        return None


# ── parsing ──────────────────────────────────────────────────────────────────


def canonical_url(url: str) -> str:
    """Strip tracking parameters and fragments; lower-case scheme and host."""
    parts = urlsplit(url.strip())
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if not k.lower().startswith(TRACKING_PARAMS)]
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", urlencode(query), ""))


def parse(body: bytes, base_url: str) -> list[Entry]:
    """The entries feedparser could read; a feed that is not a feed at all is an error."""
    parsed = feedparser.parse(body, response_headers={"content-location": base_url})
    if not parsed.entries and parsed.bozo and not parsed.feed.get("title"):
        problem = parsed.get("bozo_exception")
        reason = getattr(problem, "getMessage", lambda: None)() or str(problem)
        raise FeedError(f"not a feed (RSS/Atom could not be parsed: {reason})")
    if not parsed.entries and not parsed.feed and not parsed.get("version"):
        raise FeedError("not a feed: the document has no RSS or Atom channel")
    return [_entry(e, base_url) for e in parsed.entries]


def _entry(e, base_url: str) -> Entry:
    link = urljoin(base_url, e.get("link", "")) if e.get("link") else ""
    html = ""
    if e.get("content"):
        html = max((c.get("value", "") for c in e.content), key=len)
    summary = e.get("summary", "")
    html = content.sanitise(html or summary)
    title = one_line(content.plain_text(e.get("title", ""))) or "(untitled)"
    lead = content.lead(html) or content.lead(content.sanitise(summary))
    digest = hashlib.sha256(f"{title}\n{html}".encode()).hexdigest()
    identity = e.get("id") or (canonical_url(link) if link else f"sha256:{digest}")
    return Entry(
        identity=identity[:2048],
        url=canonical_url(link) if link else "",
        title=title,
        content_html=html,
        lead=lead,
        content_hash=digest,
        published_at=_date(e),
        author=e.get("author"),
        image_url=_image(e),
        categories=[t["term"] for t in e.get("tags", []) if t.get("term")],
    )


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


# ── storing ──────────────────────────────────────────────────────────────────


def store(session: Session, feed: Feed | None, entries: list[Entry], now: datetime) -> tuple[list[int], int]:
    """Insert new stories, update edited ones; return (new article ids, number updated)."""
    new_ids, updated = [], 0
    for entry in entries:
        clauses = [Article.identity == entry.identity]
        # The same story in two feeds is one article; but a feed whose items all link to
        # its home page must not collapse into one.
        if entry.url and urlsplit(entry.url).path not in ("", "/"):
            clauses.append(Article.url == entry.url)
        existing = session.scalars(select(Article).where(or_(*clauses)).limit(1)).first()
        if existing is not None:
            if existing.content_hash != entry.content_hash:
                # An edit: refresh what we show, but it is the same story and is never sent again.
                existing.title, existing.lead = entry.title, entry.lead
                existing.content_html, existing.content_hash = entry.content_html, entry.content_hash
                existing.image_url = entry.image_url or existing.image_url
                existing.updated_at = now
                updated += 1
            continue
        published = entry.published_at if entry.published_at and entry.published_at <= now else now
        article = Article(
            feed_id=feed.id if feed else None,
            identity=entry.identity,
            url=entry.url or (feed.url if feed else ""),
            title=entry.title[:1000],
            lead=entry.lead,
            content_html=entry.content_html,
            content_hash=entry.content_hash,
            author=entry.author,
            image_url=entry.image_url,
            categories=entry.categories,
            published_at=published,
            first_seen_at=now,
        )
        try:
            with session.begin_nested():  # another worker may store the same story at the same time
                session.add(article)
        except IntegrityError:
            continue
        new_ids.append(article.id)
    return new_ids, updated


def ingest(session: Session, feed: Feed, body: bytes, now: datetime | None = None) -> PollResult:
    """Parse a feed document already in hand and store its entries."""
    now = now or utcnow()
    entries = parse(body, feed.url)
    new_ids, updated = store(session, feed, entries, now)
    return PollResult(feed.id, feed.url, "ok", new_ids, updated)


def poll(session: Session, feed: Feed, settings: Settings, now: datetime | None = None) -> PollResult:
    """Fetch, parse and store one feed, and record how it went on the feed itself."""
    now = now or utcnow()
    feed.last_fetched_at = now
    try:
        fetched = fetch(feed, settings, now)
        if fetched.url != feed.url and not session.scalar(select(Feed.id).where(Feed.url == fetched.url)):
            feed.url = fetched.url
        if fetched.status == 304:
            result = PollResult(feed.id, feed.url, "not-modified")
        elif fetched.status == 410:
            feed.status = "disabled"
            raise FeedError("the server says the feed is gone for good (410); feed disabled")
        elif fetched.status != 200:
            if fetched.status in (429, 503) and fetched.retry_after:
                feed.next_fetch_at = max(fetched.retry_after, now)
            raise FeedError(f"HTTP {fetched.status}")
        else:
            with session.begin_nested():
                result = ingest(session, feed, fetched.body, now)
            feed.etag, feed.last_modified = fetched.etag, fetched.last_modified
    except FeedError as e:
        feed.last_error = str(e)
        feed.error_count += 1
        backoff = min(timedelta(seconds=settings.poll_interval) * 2 ** (feed.error_count - 1), MAX_BACKOFF)
        if feed.next_fetch_at is None or feed.next_fetch_at <= now:
            feed.next_fetch_at = now + backoff
        return PollResult(feed.id, feed.url, "gone" if feed.status == "disabled" else "error", error=str(e))
    feed.last_success_at, feed.last_error, feed.error_count = now, None, 0
    feed.next_fetch_at = now + timedelta(seconds=settings.poll_interval)
    return result


def due_feed_ids(session: Session, now: datetime) -> list[int]:
    return list(session.scalars(
        select(Feed.id).where(Feed.status == "active", Feed.next_fetch_at <= now).order_by(Feed.next_fetch_at)
    ))
