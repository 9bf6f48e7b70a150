"""feed → article: feeds added and polled politely (conditional GET, backoff), each document read by
`documents`, each story stored once; and how each feed is doing."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from syndicate import db, removals
from syndicate.config import Settings
from syndicate.errors import FeedError, InvalidInput
from syndicate.ingest import fetch, stored
from syndicate.ingest.documents import Document, Entry, read
from syndicate.models import Article, Edition, EditionArticle, Feed, Newsletter, Post, utcnow
from syndicate.text import shorten

log = logging.getLogger(__name__)
MAX_BACKOFF = timedelta(hours=24)
ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.8"


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


def find_feed(session: Session, url: str) -> Feed | None:
    """The feed added with this address (as add_feed would write it), if any."""
    return session.scalar(select(Feed).where(Feed.url == check_url(url)))


def add_feed(session: Session, url: str) -> Feed:
    url = check_url(url)
    feed = session.scalar(select(Feed).where(Feed.url == url))
    if feed is None:
        feed = Feed(url=url)
        session.add(feed)
        session.flush()
    return feed


NO_CHECK_HINT = "--no-check adds it without fetching (a feed not up yet)"


@dataclass
class Checked:
    """A feed as one fetch found it, before it is added."""

    url: str  # after permanent redirects: the address to keep
    title: str | None
    items: int


def check_feed(url: str, settings: Settings, http: httpx.Client | None = None, now: datetime | None = None
               ) -> Checked:
    """Fetch `url` once through the guarded fetcher, as its polls will, and read it: what was found, or a
    FeedError saying why it won't do and what to do. An editor who typos an address hears it now, not from
    a feed that fails every poll unseen."""
    url = check_url(url)
    got = download(Feed(url=url), settings, now or utcnow(), http)  # a Feed never added: only its url is read
    if got.error is not None:
        hint = (PRIVATE_FEEDS_HINT if isinstance(got.error, fetch.Refused) else
                NOT_A_FEED_HINT if str(got.error).startswith("not a feed") else "check the address and try again")
        raise FeedError(f"{url}: {got.error}; {hint}, or {NO_CHECK_HINT}") from got.error
    fetched = got.fetched
    if fetched.status != 200:
        said = {404: "not found", 410: "gone for good", 401: "asks for a login", 403: "forbidden"}.get(fetched.status)
        raise FeedError(f"{url} answers HTTP {fetched.status}" + (f" ({said})" if said else "") +
                        ": check the address in a browser (a feed's often ends in /feed, /rss or .xml); "
                        + NO_CHECK_HINT)
    document = got.document
    kind = (fetched.headers.get("content-type") or "").split(";")[0].strip().lower()
    if not document.entries and not document.title:
        raise FeedError(f"{url} is not a feed" + (f" (it answers {kind})" if kind else "") +
                        f": {NOT_A_FEED_HINT}, or {NO_CHECK_HINT}")
    return Checked(fetched.url, document.title, len(document.entries))


NOT_A_FEED_HINT = ("give the address of its RSS or Atom feed (a web page names it in a <link rel=\"alternate\">, "
                   "often /feed or /rss)")
PRIVATE_FEEDS_HINT = "a feed on this machine or network needs " + fetch.PRIVATE_HINT.removeprefix("set ")


def request_headers(feed: Feed) -> dict[str, str]:
    """Conditional GET: what we have is sent back, so an unchanged feed costs a 304 and no parsing."""
    headers = {"Accept": ACCEPT}
    if feed.etag:
        headers["If-None-Match"] = feed.etag
    if feed.last_modified:
        headers["If-Modified-Since"] = feed.last_modified
    return headers


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
            existing.title, existing.lead = entry.title[:1000], entry.lead  # Article.title's size, as inserted
            existing.content_html, existing.content_hash = entry.content_html, entry.content_hash
            if entry.image_url:  # a picture and its words go together
                existing.image_url, existing.image_alt = entry.image_url, entry.image_alt
            existing.language = entry.language or existing.language
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
        # url "": a story with no address of its own (documents.story_link), never the feed's.
        return Article(
            feed_id=feed.id if feed else None, identity=key, url=entry.url,
            title=entry.title[:1000], lead=entry.lead, content_html=entry.content_html,
            content_hash=entry.content_hash, author=entry.author, image_url=entry.image_url,
            image_alt=entry.image_alt, categories=entry.categories, language=entry.language, first_seen_at=now,
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
    for problems, what in (([f"{shorten(entry.title, 80)!r}: {entry.link_problem}" for entry in document.entries
                             if entry.link_problem], "had no web address of their own as a link"),
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
    return fetch.guarded_get(http, feed.url, headers=request_headers(feed), max_bytes=settings.feed_max_bytes,
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


def poll_many(sessions: sessionmaker, settings: Settings, feed_ids: list[int], concurrency: int = 16,
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
            with sessions() as session, session.begin():
                if (feed := session.get(Feed, feed_id)) is not None:
                    record(session, feed, Download(error=FeedError(error)), settings, utcnow())
        except Exception:  # noqa: BLE001 - the database itself is away: the log above has it
            log.exception("could not note the failure on feed %d", feed_id)

    def poll_one(http: httpx.Client, feed_id: int) -> PollResult:
        with sessions() as session:
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


def active_feed_ids(session: Session) -> list[int]:
    """Every active feed's id, by id: those `syndicate feed poll --all` fetches (a disabled one never)."""
    return list(session.scalars(select(Feed.id).where(Feed.status == "active").order_by(Feed.id)))


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
    return db.row(session, Feed, feed_id, f"no feed {feed_id}; `syndicate feed list` shows them")


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
    """Every feed's health, with how many articles it brought."""
    return [health(feed, now, articles) for feed, articles in stored.feeds_with_article_counts(session)]


# ── disabling and deleting (the CLI, the desk) ───────────────────────────────


def _name(feed: Feed) -> str:
    return f"feed {feed.id} ({feed.url})"


def _stories(session: Session, feed: Feed) -> tuple[int, int, int]:
    """How many stories the feed brought, how many of them went out in an edition that started, and in how
    many posts that reached a network."""
    stories = session.scalar(select(func.count()).select_from(Article).where(Article.feed_id == feed.id)) or 0
    mailed = session.scalar(
        select(func.count(func.distinct(EditionArticle.article_id)))
        .join(Article, Article.id == EditionArticle.article_id).join(Edition, Edition.id == EditionArticle.edition_id)
        .where(Article.feed_id == feed.id, Edition.started_at.is_not(None))) or 0
    posted = session.scalar(
        select(func.count()).select_from(Post).join(Article, Article.id == Post.article_id)
        .where(Article.feed_id == feed.id, Post.status.in_(("posted", "ambiguous", "retracted")))) or 0
    return stories, mailed, posted


def _filtering(session: Session, feed: Feed) -> list[Newsletter]:
    """The newsletters that take only chosen feeds, this one among them."""
    # Every newsletter, read: an empty filter is stored as JSON null, which SQL's IS NULL doesn't see.
    return [n for n in session.scalars(select(Newsletter).order_by(Newsletter.slug)) if feed.id in (n.feed_ids or [])]


def disable_plan(session: Session, feed: Feed) -> removals.Plan:
    stories, _, _ = _stories(session, feed)
    plan = removals.Plan(_name(feed), [
        "it is not fetched any more",
        f"its {stories} {'story stays' if stories == 1 else 'stories stay'}: editions and posts still take "
        "those not sent yet (withdraw one with `syndicate article retract`)",
        f"`syndicate feed enable {feed.id}` fetches it again"])
    if feed.status == "disabled":
        plan.refused = f"{_name(feed)} is disabled already" + (f" ({feed.last_error})" if feed.last_error else "")
    return plan


def disable_feed(session: Session, feed: Feed, by: str, now: datetime | None = None) -> removals.Plan:
    """Not fetched any more; its stories stay where they are."""
    plan = disable_plan(session, feed)
    plan.check()
    feed.status = "disabled"
    removals.record(session, "feed", feed.url, "disabled", by, plan.detail, now)
    return plan


def enable_feed(session: Session, feed: Feed, by: str, now: datetime | None = None) -> Feed:
    """Fetched again at once (a feed the site had said was gone, 410, too)."""
    if feed.status == "active":
        raise InvalidInput(f"{_name(feed)} is active already")
    now = now or utcnow()
    feed.status, feed.next_fetch_at, feed.error_count = "active", now, 0
    removals.record(session, "feed", feed.url, "enabled", by, "fetched again from now on", now)
    return feed


def delete_plan(session: Session, feed: Feed) -> removals.Plan:
    stories, mailed, posted = _stories(session, feed)
    plan = removals.Plan(_name(feed), [
        "the feed is forgotten: its address and how its fetches went",
        f"its {stories} {'story is' if stories == 1 else 'stories are'} kept, without a feed: "
        f"{mailed} went out in editions and {posted} in posts, and those keep their content and the archive its pages",
        "added again later, it starts afresh; stories it brought already are known by their link and not sent again"])
    if filtering := _filtering(session, feed):
        names = ", ".join(n.slug for n in filtering)
        plan.refused = (f"newsletter {names} takes only chosen feeds, this one among them: take it out of its feeds "
                        f"first (`syndicate newsletter edit {filtering[0].slug} --feed …`, or its page on the desk), "
                        f"or disable the feed instead (`syndicate feed disable {feed.id}`)")
    return plan


def delete_feed(session: Session, feed: Feed, by: str, now: datetime | None = None) -> removals.Plan:
    """The feed row goes; its stories stay, detached (their feed_id set to NULL by the database), so no edition
    or post loses what it carried."""
    plan = delete_plan(session, feed)
    plan.check()
    removals.record(session, "feed", feed.url, "deleted", by, plan.detail, now)
    session.execute(update(Article).where(Article.feed_id == feed.id).values(feed_id=None)
                    .execution_options(synchronize_session=False))
    session.delete(feed)
    session.flush()
    return plan
