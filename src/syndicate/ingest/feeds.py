"""feed → article: fetch politely, parse whatever feedparser understands, store each story once."""

from __future__ import annotations

import calendar
import hashlib
import logging
import multiprocessing
import os
import re
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote_plus, urljoin, urlsplit, urlunsplit
from xml.parsers import expat

import feedparser
import httpx
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from syndicate import links
from syndicate.config import Settings
from syndicate.errors import FeedError, NotFound
from syndicate.ingest import content, fetch
from syndicate.models import Article, Feed, utcnow
from syndicate.text import one_line

TRACKING_PARAMS = ("utm_", "fbclid", "gclid", "mc_cid", "mc_eid")
log = logging.getLogger(__name__)
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
    guid: str | None = None  # only unique within its feed: stored under the feed's name
    link_problem: str | None = None  # why its own link was passed over (not a web address)


@dataclass
class PollResult:
    feed_id: int
    url: str
    status: str  # "ok", "not-modified", "error", "gone"
    new_article_ids: list[int] = field(default_factory=list)
    updated: int = 0
    error: str | None = None


# ── feeds ────────────────────────────────────────────────────────────────────


check_url = fetch.check_url


def add_feed(session: Session, url: str) -> Feed:
    url = check_url(url)
    feed = session.scalar(select(Feed).where(Feed.url == url))
    if feed is None:
        feed = Feed(url=url)
        session.add(feed)
        session.flush()
    return feed


def request_headers(feed: Feed) -> dict[str, str]:
    """Conditional GET: what we have is sent back, so an unchanged feed costs a 304 and no parsing."""
    headers = {"Accept": ACCEPT}
    if feed.etag:
        headers["If-None-Match"] = feed.etag
    if feed.last_modified:
        headers["If-Modified-Since"] = feed.last_modified
    return headers


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
    title = one_line(content.plain_text(str(parsed.feed.get("title") or "")))[:500] or None  # Feed.title's size
    document = Document([], title)
    for e in entries:
        try:
            document.entries.append(_entry(e, base_url))
        except Exception as problem:  # noqa: BLE001 - this item only: the rest of the feed is read
            name = one_line(str(e.get("title") or e.get("link") or e.get("id") or "an item"))[:80]
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


def _entry(e, base_url: str) -> Entry:
    """A feedparser entry, read into `normalise`."""
    link = urljoin(base_url, e.get("link", "")) if e.get("link") else ""
    body, summary = {}, e.get("summary_detail") or {}
    if e.get("content"):
        body = max(e.content, key=lambda c: len(c.get("value", "")))
    body = body or summary
    return normalise(
        link=link, guid=e.get("id"), title=e.get("title", ""), html=body.get("value", ""),
        summary=e.get("summary", ""), html_base=urljoin(link or base_url, body.get("base") or ""),
        published_at=_date(e), author=e.get("author"), image_url=_image(e),
        categories=[t["term"] for t in e.get("tags", []) if t.get("term")],
    )


def normalise(*, link: str, guid: str | None, title: str, html: str, summary: str = "", html_base: str = "",
              published_at: datetime | None = None, author: str | None = None, image_url: str | None = None,
              categories: list[str] | None = None) -> Entry:
    """One story as syndicate keeps it, whether a feed carried it or a CMS pushed it.

    Relative links in the story resolve against `html_base` (its xml:base) or else its own page.
    """
    base = html_base or link
    html = content.sanitise(html or summary, base_url=base)
    title = one_line(content.plain_text(title)) or "(untitled)"
    lead = content.lead(html) or content.lead(content.sanitise(summary, base_url=base))
    digest = hashlib.sha256(f"{title}\n{html}".encode()).hexdigest()
    guid = (guid or "").strip() or None
    url, link_problem = story_link(link, guid)
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
        author=one_line(author or "") or None,
        image_url=links.href(image_url) or content.first_image(html) or None,
        categories=categories or [],
    )


def story_link(link: str, guid: str | None) -> tuple[str, str | None]:
    """The story's address, canonical: its link if that is a web address, else its guid if that is one (RSS's
    permalink guid), else none; and why its own link was passed over."""
    problem = None
    if link:
        try:
            return canonical_url(links.web_link(link)), None
        except links.NotAWebLink as e:
            problem = str(e)
    if guid and problem:
        try:
            return canonical_url(links.web_link(guid)), f"{problem}; its guid is used instead"
        except links.NotAWebLink:
            pass
    return "", problem and f"{problem}; the story links to its feed instead"


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
    """Insert new stories, update edited ones; return (new article ids, number updated).

    One query finds every story the feed already has; the new ones are inserted together.
    """
    keys = [key_for(feed, entry) for entry in entries]
    known = session.scalars(select(Article).where(or_(
        Article.identity.in_(keys), Article.url.in_([e.url for e in entries if _linkable(e.url)])))).all()
    by_key, by_url = {a.identity: a for a in known}, {a.url: a for a in known}
    fresh: list[tuple[str, Entry]] = []
    fresh_keys, fresh_urls = set(), set()
    updated = 0
    for key, entry in zip(keys, entries, strict=True):
        existing = by_key.get(key) or (by_url.get(entry.url) if _linkable(entry.url) else None)
        if existing is None:
            if key in fresh_keys or (_linkable(entry.url) and entry.url in fresh_urls):
                continue  # the same story twice in one document: stored once
            fresh.append((key, entry))
            fresh_keys.add(key)
            fresh_urls.add(entry.url)
            continue
        # Only its own source edits a story: another feed's copy of it must not
        # overwrite it back and forth on every poll.
        own = existing.identity == key or existing.feed_id == (feed.id if feed else None)
        if own and existing.content_hash != entry.content_hash:
            # An edit: refresh what we show, but it is the same story and is never sent again.
            existing.title, existing.lead = entry.title, entry.lead
            existing.content_html, existing.content_hash = entry.content_html, entry.content_hash
            existing.image_url = entry.image_url or existing.image_url
            existing.updated_at = now
            updated += 1
    return _insert(session, feed, fresh, now), updated


def key_for(feed: Feed | None, entry: Entry) -> str:
    """The stored identity: two feeds may both call an item "1", so a guid counts within its source."""
    if not entry.guid:
        return entry.identity
    return f"{f'feed:{feed.id}' if feed else 'push'}|{entry.guid}"[:2048]


def find(session: Session, feed: Feed | None, entry: Entry) -> Article | None:
    """The article `store` matches an entry to: its own (same key), else the same story by its link."""
    clauses = [Article.identity == key_for(feed, entry)]
    if _linkable(entry.url):
        clauses.append(Article.url == entry.url)
    return session.scalars(select(Article).where(or_(*clauses))
                           .order_by((Article.identity == key_for(feed, entry)).desc()).limit(1)).first()


def _linkable(url: str) -> bool:
    """Whether a link names one story: a feed whose items all link to its home page must not collapse."""
    return bool(url) and urlsplit(url).path not in ("", "/")


def _insert(session: Session, feed: Feed | None, fresh: list[tuple[str, Entry]], now: datetime) -> list[int]:
    def article(key: str, entry: Entry) -> Article:
        return Article(
            feed_id=feed.id if feed else None, identity=key, url=entry.url or (feed.url if feed else ""),
            title=entry.title[:1000], lead=entry.lead, content_html=entry.content_html,
            content_hash=entry.content_hash, author=entry.author, image_url=entry.image_url,
            categories=entry.categories, first_seen_at=now,
            published_at=entry.published_at if entry.published_at and entry.published_at <= now else now,
        )

    try:
        with session.begin_nested():
            rows = [article(key, entry) for key, entry in fresh]
            session.add_all(rows)
        return [row.id for row in rows]
    except IntegrityError:
        pass
    # Another worker stored one of these stories meanwhile: one at a time, skipping what exists.
    ids = []
    for key, entry in fresh:
        try:
            with session.begin_nested():
                row = article(key, entry)
                session.add(row)
            ids.append(row.id)
        except IntegrityError:
            continue
    return ids


def ingest(session: Session, feed: Feed, body: bytes, now: datetime | None = None) -> PollResult:
    """Parse a feed document already in hand and store its entries."""
    now = now or utcnow()
    document = read(body, feed.url)
    new_ids, updated = store(session, feed, document.entries, now)
    feed.title = document.title or feed.title
    feed.last_error = passed_over(document)
    return PollResult(feed.id, feed.url, "ok", new_ids, updated)


def passed_over(document: Document) -> str | None:
    """What the feed's editor should hear of items passed over, on the feed: the poll was fine. Items whose
    link was refused (stored with another), and items that could not be read at all (not stored)."""
    said = []
    for problems, what in (([f"{entry.title!r}: {entry.link_problem}" for entry in document.entries
                             if entry.link_problem], "had a link that is not a web address"),
                           (document.skipped, "could not be read and were skipped")):
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            said.append(f"{len(problems)} item(s) {what}: " + "; ".join(problems[:3]) + more)
    return "read, but " + "; ".join(said) if said else None


@dataclass
class Download:
    """What the network gave for a feed, parsed: fetched and done before any transaction opens."""

    fetched: fetch.Fetched | None = None
    document: Document | None = None
    error: FeedError | None = None


def download(feed: Feed, settings: Settings, now: datetime, http: httpx.Client | None = None,
             parsing: Executor | None = None) -> Download:
    """Fetch and parse one feed; `parsing` (a process pool) takes the CPU-bound part off this process."""
    try:
        if http is None:
            with fetch.client(settings.allow_private_feeds, settings.feed_timeout) as own:
                fetched = _get(own, feed, settings, now)
        else:
            fetched = _get(http, feed, settings, now)
        document = None
        if fetched.status == 200:
            arguments = (fetched.body, feed.url, fetched.headers.get("content-type"))
            document = parsing.submit(read, *arguments).result() if parsing else read(*arguments)
        return Download(fetched, document)
    except FeedError as e:
        return Download(error=e)


def _get(http: httpx.Client, feed: Feed, settings: Settings, now: datetime) -> fetch.Fetched:
    return fetch.get(http, feed.url, headers=request_headers(feed), max_bytes=settings.feed_max_bytes,
                     deadline=time.monotonic() + settings.feed_timeout, now=now)


def record(session: Session, feed: Feed, got: Download, settings: Settings, now: datetime) -> PollResult:
    """Store what a download brought and note on the feed how it went; a failure forgets nothing."""
    feed.last_fetched_at = now
    try:
        if got.error is not None:
            raise got.error
        fetched = got.fetched
        if fetched.url != feed.url and not session.scalar(select(Feed.id).where(Feed.url == fetched.url)):
            feed.url = fetched.url  # moved permanently
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
            new_ids, updated = store(session, feed, got.document.entries, now)
            result = PollResult(feed.id, feed.url, "ok", new_ids, updated)
            feed.title = got.document.title or feed.title
            feed.etag, feed.last_modified = fetched.headers.get("etag"), fetched.headers.get("last-modified")
    except FeedError as e:
        feed.last_error = str(e)
        feed.error_count += 1
        backoff = min(timedelta(seconds=settings.poll_interval) * 2 ** (feed.error_count - 1), MAX_BACKOFF)
        if feed.next_fetch_at is None or feed.next_fetch_at <= now:
            feed.next_fetch_at = now + backoff
        return PollResult(feed.id, feed.url, "gone" if feed.status == "disabled" else "error", error=str(e))
    feed.last_success_at, feed.error_count = now, 0
    feed.last_error = passed_over(got.document) if got.document else None
    feed.next_fetch_at = now + timedelta(seconds=settings.poll_interval)
    return result


def poll(session: Session, feed: Feed, settings: Settings, now: datetime | None = None,
         http: httpx.Client | None = None) -> PollResult:
    """Fetch, parse and store one feed in the caller's transaction (poll_many keeps the network out of it)."""
    now = now or utcnow()
    return record(session, feed, download(feed, settings, now, http), settings, now)


def poll_many(Session: sessionmaker, settings: Settings, feed_ids: list[int], concurrency: int = 16,
              progress=None) -> list[PollResult]:
    """Poll feeds a bounded number at a time: a slow server holds up one thread, not the rest.

    Each feed is downloaded and parsed with no transaction open, then stored in a short
    one of its own; the HTTP connection pool is shared, so feeds on one host reuse connections.
    """
    def one(http: httpx.Client, feed_id: int) -> PollResult:
        try:
            return poll_one(http, feed_id)
        except Exception as e:  # noqa: BLE001 - a bug or a database hiccup on one feed spares the others
            log.exception("polling feed %d failed", feed_id)
            error = f"internal error: {type(e).__name__}: {e}"
            note_failure(feed_id, error)
            return PollResult(feed_id, "", "error", error=error)

    def note_failure(feed_id: int, error: str) -> None:
        # On the feed too, as any failure is, and backed off like one: not only in a log nobody reads.
        try:
            with Session() as session, session.begin():
                if (feed := session.get(Feed, feed_id)) is not None:
                    record(session, feed, Download(error=FeedError(error)), settings, utcnow())
        except Exception:  # noqa: BLE001 - the database itself is away: the log above has it
            log.exception("could not note the failure on feed %d", feed_id)

    def poll_one(http: httpx.Client, feed_id: int) -> PollResult:
        with Session() as session:
            with session.begin():
                feed = session.get(Feed, feed_id)
            if feed is None or feed.status != "active":
                return PollResult(feed_id, feed.url if feed else "", "gone")
            now = utcnow()
            got = download(feed, settings, now, http, parsing)
            with session.begin():
                return record(session, session.merge(feed), got, settings, now)

    results = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with fetch.client(settings.allow_private_feeds, settings.feed_timeout, limits) as http, \
            ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="poll") as pool, \
            _parsing_pool(len(feed_ids)) as parsing:
        for result in pool.map(lambda feed_id: one(http, feed_id), feed_ids):
            results.append(result)
            if progress:
                progress(result)
    return results


PARSE_IN_PROCESSES_FROM = 100  # feeds in one call: below this, starting processes costs more than it saves


@contextmanager
def _parsing_pool(feeds: int):
    """Parsing is CPU work that threads can't spread over cores: a process per core does it, for
    large polls run from the command line. Celery's pool processes may not start children; there
    the worker processes are the parallelism already."""
    cores = os.cpu_count() or 1
    if feeds < PARSE_IN_PROCESSES_FROM or cores < 2 or multiprocessing.current_process().daemon:
        yield None
        return
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("forkserver")) as parsing:
        yield parsing


def due_feed_ids(session: Session, now: datetime) -> list[int]:
    return list(session.scalars(
        select(Feed.id).where(Feed.status == "active", Feed.next_fetch_at <= now).order_by(Feed.next_fetch_at)
    ))


def claim_due(session: Session, settings: Settings, now: datetime) -> list[int]:
    """Due feeds, each leased (settings.leases.requeue) so the next tick doesn't queue it again meanwhile;
    a feed whose task was lost is due again once the lease ends."""
    ids = due_feed_ids(session, now)
    if ids:
        session.execute(update(Feed).where(Feed.id.in_(ids), Feed.next_fetch_at <= now)
                        .values(next_fetch_at=now + settings.leases.requeue)
                        .execution_options(synchronize_session=False))
    return ids


# ── how feeds are doing (the desk, the API) ─────────────────────────────────


def get_feed(session: Session, feed_id: int) -> Feed:
    feed = session.get(Feed, feed_id)
    if feed is None:
        raise NotFound(f"no feed {feed_id}; `syndicate feed list` shows them")
    return feed


def health(feed: Feed, now: datetime, articles: int = 0) -> dict:
    """A feed as an editor asks after it: ok; failing (so many fetches in a row, and the last error);
    disabled (gone for good, 410); or new (not fetched yet). `due`: its next fetch is at hand."""
    if feed.status != "active":
        state = feed.status
    elif feed.error_count:
        state = "failing"
    elif feed.last_success_at is None:
        state = "new"
    else:
        state = "ok"
    return dict(id=feed.id, url=feed.url, title=feed.title, status=state, failures=feed.error_count,
                last_fetched_at=feed.last_fetched_at, last_success_at=feed.last_success_at,
                last_error=feed.last_error, next_fetch_at=feed.next_fetch_at,
                due=feed.status == "active" and feed.next_fetch_at <= now, articles=articles)


def overview(session: Session, now: datetime) -> list[dict]:
    """Every feed's health, with how many articles it brought (one count query for all of them)."""
    counts = dict(session.execute(select(Article.feed_id, func.count()).group_by(Article.feed_id)).all())
    return [health(feed, now, counts.get(feed.id, 0)) for feed in session.scalars(select(Feed).order_by(Feed.id))]
