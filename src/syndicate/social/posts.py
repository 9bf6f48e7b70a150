"""article → post: one teaser per (article, account), in the ledger before it is published, at the account's pace.

pending ──dispatch──▶ sending ──▶ posted | ambiguous | failed | skipped
   ▲  └─ held / cancelled by an editor        (ambiguous: X called it a duplicate after an unanswered try)
posted | ambiguous ──▶ retracted: an editor took it back (deleted on the network), or withdrew the story

Each tick dispatches at most one post per account, when the account's pace allows: inside its posting
window (in its own time zone), a minimum gap after the previous one, under its daily cap and any
limit the network announced. A backlog (after an outage, a pause, the kill switch) drains at that
pace, breaking lane first, then the newest stories; a regular post older than the account's max age
when its turn comes is skipped, with the reason recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from syndicate import db, ledger, links
from syndicate.config import Settings
from syndicate.errors import AccountProblem, DuplicatePost, InvalidInput, TransportError
from syndicate.ingest import fetch, stored
from syndicate.ledger import POST_OPEN, PostStatus
from syndicate.models import Article, Post, SocialAccount, utcnow
from syndicate.social import accounts, images, linkcard, teaser
from syndicate.social.accounts import AccountSettings
from syndicate.social.clients.base import PostRequest, RetractRequest, SocialClient, record_key, tid

log = logging.getLogger(__name__)

RETRY_BASE, RETRY_MAX, MAX_ATTEMPTS = 60, 1800, 8  # RETRY_MAX stays below the broker's visibility timeout
PARK_DEFAULT = timedelta(minutes=15)  # a 429 that didn't say until when
OPEN = POST_OPEN


# ── the teaser ───────────────────────────────────────────────────────────────


def compose(account: SocialAccount, article: Article) -> teaser.Teaser:
    settings = accounts.settings_of(account)
    return teaser.compose(settings.rules(account.network), title=article.title, lead=article.lead or "",
                          url=article.url, categories=article.categories or (), options=settings.teaser_options)


def payload_of(composed: teaser.Teaser) -> dict:
    return dict(url=composed.url, hashtags=list(composed.hashtags), length=composed.length, limit=composed.limit,
                dropped=list(composed.dropped),
                facets=[dict(kind=f.kind, start=f.start, end=f.end, value=f.value) for f in composed.facets])


def teaser_of(post: Post) -> teaser.Teaser:
    """The teaser as stored (composed, or as an editor wrote it)."""
    p = post.payload or {}
    return teaser.Teaser(network=post.account.network, text=post.text, url=p.get("url", post.article.url),
                         hashtags=tuple(p.get("hashtags", ())), length=p.get("length", 0), limit=p.get("limit", 0),
                         facets=tuple(teaser.Facet(**f) for f in p.get("facets", ())),
                         dropped=tuple(p.get("dropped", ())))


def preview(account: SocialAccount, article: Article) -> teaser.Teaser:
    return compose(account, article)


# ── planning ─────────────────────────────────────────────────────────────────


def ensure_default_account(session: Session) -> SocialAccount | None:
    """With no account at all, one X account named "x": live with SYNDICATE_X_* credentials, dry-run otherwise."""
    if session.scalar(select(func.count()).select_from(SocialAccount)):
        return None
    account = SocialAccount(name="x", network="x", settings=AccountSettings().to_dict())
    session.add(account)
    session.flush()
    return account


def plan(session: Session, settings: Settings, now: datetime | None = None) -> list[int]:
    """A pending post for each article first seen after its account was connected, and not yet planned.

    An article edited later keeps its post (the unique key is article × account × share): a correction
    is never posted twice; a re-share is an editor's explicit act."""
    now = now or utcnow()
    new_ids = []
    for account in session.scalars(select(SocialAccount).where(SocialAccount.status == "active")).all():
        account_settings = accounts.settings_of(account)
        breaking = {c.casefold() for c in account_settings.breaking_categories}
        planned = select(Post.article_id).where(Post.account_id == account.id)
        articles = session.scalars(
            select(Article).where(Article.first_seen_at >= account.created_at, Article.id.not_in(planned),
                                  Article.withdrawn_at.is_(None))
            .order_by(Article.published_at)
        ).all()
        for article in articles:
            lane = "breaking" if breaking & {c.casefold() for c in article.categories or ()} else "regular"
            post = Post(article_id=article.id, account_id=account.id, share=0, lane=lane, created_at=now,
                        next_attempt_at=now, dry_run=accounts.is_dry_run(account, settings.x is not None))
            if (category := account_settings.skips(article.categories)) is not None:
                post.text, post.payload, post.status = "", {}, "skipped"
                post.error = (f"not posted: the story is filed under {category!r}, which this account leaves out "
                              f"(`syndicate account edit {account.name} --skip-category …` to change; re-share it "
                              "to post it anyway)")
                session.add(post)
                continue
            if not article.url:  # its feed gave no address of its own (ingest says why on the feed)
                post.text, post.payload, post.status = "", {}, "skipped"
                post.error = ("not posted: the story has no link of its own (its feed's item links to nothing, or "
                              "to the feed itself); fix the feed, or push the story with its link")
                session.add(post)
                continue
            try:
                composed = compose(account, article)
            except Exception as e:  # one story that can't be teased never holds up the others
                log.warning("no teaser for article %d on %s: %s", article.id, account.name, e)
                post.text, post.payload, post.status = "", {}, "failed"
                post.error = f"no teaser could be made: {e}. Fix the story (or its link) and re-share it."
                session.add(post)
                continue
            post.text, post.payload = composed.text, payload_of(composed)
            session.add(post)
            session.flush()
            new_ids.append(post.id)
    return new_ids


# ── the link card ────────────────────────────────────────────────────────────

CARD_DEADLINE = 8.0  # seconds for one article page (and, for Bluesky, its image)
CARD_BUDGET = 120.0  # seconds of reading pages in one call (the social tick's soft limit is 600)


def prepare(sessions: sessionmaker, settings: Settings, now: datetime | None = None) -> list[int]:
    """Plan posts for new stories, then check the link card of every waiting post that has none yet: these,
    an editor's re-shares, and any an earlier run planned. The tick and `syndicate feed poll` both come here,
    so every post is checked once before the tick dispatches it, whichever way it was made. The new posts' ids."""
    with db.transaction(sessions) as session:
        ensure_default_account(session)
        new = plan(session, settings, now)
    check_cards(sessions, settings)
    return new


def unchecked(payload: dict | None) -> bool:
    """Whether a post's link card was never looked for (a card, or why there is none, is kept once checked)."""
    return not {"card", "card_error"} & (payload or {}).keys()


def check_cards(sessions: sessionmaker, settings: Settings, post_ids: list[int] | None = None) -> None:
    """Read the article page of each waiting post not checked yet — of `post_ids` only, if given — once per
    page (through the ingest SSRF guard): its og:/twitter: tags build the Bluesky card and show editors what
    X and Mastodon will unfurl. A page without an image is fine; an unreachable page is reported on the post
    (it still goes: the story may be up by then).

    Each page's finding is stored as soon as it is made, and one call reads pages for CARD_BUDGET seconds at
    most, the oldest posts' first: a backlog of pages that stall is worked off tick by tick, and neither
    holds up the tick's dispatch nor starts again from the beginning when a tick is cut short."""
    query = select(Post.id, Post.payload, Article.url).join(Article).where(Post.status.in_(("pending", "held")))
    if post_ids is not None:
        query = query.where(Post.id.in_(post_ids))
    pages: dict[str, list[int]] = {}  # the page → its posts, in the order the posts were made
    with sessions() as session:
        for post_id, payload, url in session.execute(query.order_by(Post.id)):
            if unchecked(payload):
                pages.setdefault(url, []).append(post_id)
    with fetch.client(settings.allow_private_feeds, timeout=CARD_DEADLINE) as http:
        until = time.monotonic() + CARD_BUDGET
        for n, (url, ids) in enumerate(pages.items()):
            if n and time.monotonic() >= until:  # one page at least: every call gets somewhere
                log.info("link cards: %d page(s) left for the next tick", len(pages) - n)
                return
            found = _read_card(http, url)
            with sessions() as session, session.begin():
                for post in session.scalars(select(Post).where(Post.id.in_(ids))):
                    post.payload = {**(post.payload or {}), **found}
            check_images(sessions, settings, ids)  # the other thing read once before a post is queued


def _read_card(http, url: str) -> dict:
    """{"card": …} as the page describes it, or {"card_error": why there is none}."""
    try:
        card = linkcard.preflight(http, url, deadline=time.monotonic() + CARD_DEADLINE, fetch_image=False)
    except linkcard.PageUnreachable as e:
        return {"card_error": str(e)}
    except Exception as e:  # a page, or a link, nobody foresaw: this card only, the others go on
        log.warning("link card of %s: %s: %s", url, type(e).__name__, e)
        return {"card_error": f"the page could not be read for its card ({type(e).__name__}: {e})"}
    return {"card": dict(url=card.url, title=card.title, description=card.description, image_url=card.image_url,
                         card_type=card.card_type)}


def card_for(payload: dict, settings: Settings, with_image: bool) -> linkcard.Card | None:
    """The card a network gets: as checked at planning; for Bluesky with the image itself, fetched now
    (call it outside any transaction: it may wait on the network)."""
    stored = (payload or {}).get("card")
    if stored is None:
        return None
    if with_image and stored.get("image_url"):
        with fetch.client(settings.allow_private_feeds, timeout=CARD_DEADLINE) as http:
            try:
                return linkcard.preflight(http, stored["url"], deadline=time.monotonic() + CARD_DEADLINE)
            except linkcard.PageUnreachable:
                pass  # the card as checked, without its picture
            except Exception as e:  # the post goes without the picture rather than not at all
                log.warning("link card image of %s: %s: %s", stored["url"], type(e).__name__, e)
    return linkcard.Card(**stored, image=None, image_type=None)


# ── the story's picture ──────────────────────────────────────────────────────
#
# Checked once when the posts are planned (fetched once per picture, fitted to each account's network), and
# the outcome kept on each post: {"image": what will go, without the bytes} or {"image_error": why not}.
# The bytes are fetched and fitted again when the post goes, like the Bluesky card's picture: a worker on
# another machine needs no shared store, nothing is kept that must be cleaned up, and a post that waits a
# day still gets the picture the site serves then. A picture that fails then goes unsent, with the reason.


def check_images(sessions: sessionmaker, settings: Settings, post_ids: list[int], now: datetime | None = None) -> None:
    """Each new post's picture: fetched once per address (through the ingest SSRF guard), fitted to the
    account's network; the outcome on the post. An account with images off, or a story without one: nothing."""
    now = now or utcnow()
    with sessions() as session:
        wanted: dict[str, list[tuple[int, images.Limits, str, str]]] = {}
        for post in session.scalars(select(Post).where(Post.id.in_(post_ids))):
            settings_ = accounts.settings_of(post.account)
            if post.article.image_url and settings_.images and post.status == "pending":
                wanted.setdefault(post.article.image_url, []).append(
                    (post.id, limits_of(post.account.network, settings_), post.article.image_alt or "",
                     post.article.url))
    found: dict[int, dict] = {}
    with fetch.client(settings.allow_private_feeds, timeout=images.FETCH_DEADLINE) as http:
        for url, waiting in wanted.items():
            try:
                data = images.fetch_source(http, url, referer=waiting[0][3],
                                           deadline=time.monotonic() + images.FETCH_DEADLINE, now=now)
            except images.LeftOut as e:
                found.update({post_id: {"image_error": f"posted without its picture: {e}"} for post_id, *_ in waiting})
                continue
            except Exception as e:  # an address or answer nobody foresaw: these posts go without it
                log.warning("picture %s: %s: %s", url, type(e).__name__, e)
                found.update({post_id: {"image_error": f"posted without its picture: it could not be fetched "
                                                       f"({type(e).__name__}: {e})"} for post_id, *_ in waiting})
                continue
            fitted: dict[images.Limits, dict] = {}
            for post_id, limits, alt, _ in waiting:
                if limits not in fitted:
                    fitted[limits] = _checked(data, limits, alt, url)
                found[post_id] = fitted[limits]
    if not found:
        return
    with sessions() as session, session.begin():
        for post in session.scalars(select(Post).where(Post.id.in_(found))):
            post.payload = {k: v for k, v in (post.payload or {}).items() if k not in ("image", "image_error")} \
                | found[post.id]


def _checked(data: bytes, limits: images.Limits, alt: str, url: str) -> dict:
    try:
        return {"image": images.fit(data, limits, alt=alt, source=url).describe()}
    except images.LeftOut as e:
        return {"image_error": f"posted without its picture: {e}"}
    except Exception as e:  # a picture nobody foresaw: the post goes without it
        log.warning("picture %s: %s: %s", url, type(e).__name__, e)
        return {"image_error": f"posted without its picture: it could not be read ({type(e).__name__}: {e})"}


def limits_of(network: str, settings: AccountSettings) -> images.Limits:
    return images.limits_for(network, settings.max_image_bytes, settings.max_image_pixels, settings.instance)


def image_for(payload: dict, settings: Settings, account_settings: AccountSettings, network: str,
              article_url: str) -> tuple[images.Picture | None, str | None]:
    """The picture a post carries, fetched and fitted now (call it outside any transaction: it waits on the
    network), or why it goes without: (picture, None), (None, why), or (None, None) for a post with none."""
    stored = (payload or {}).get("image")
    if not stored or not account_settings.images:  # none checked at planning, or an editor turned them off since
        return None, None
    url = stored["url"]
    try:
        with fetch.client(settings.allow_private_feeds, timeout=images.FETCH_DEADLINE) as http:
            data = images.fetch_source(http, url, referer=article_url,
                                       deadline=time.monotonic() + images.FETCH_DEADLINE, now=utcnow())
        return images.fit(data, limits_of(network, account_settings), alt=stored.get("alt") or "", source=url), None
    except images.LeftOut as e:
        return None, f"posted without its picture: {e}"
    except Exception as e:  # the post goes without the picture rather than not at all
        log.warning("picture %s: %s: %s", url, type(e).__name__, e)
        return None, f"posted without its picture ({type(e).__name__}: {e})"


# ── pacing ───────────────────────────────────────────────────────────────────


def next_slot(settings: AccountSettings, now: datetime, last_dispatched: datetime | None,
              recent: list[datetime], parked_until: datetime | None, windowed: bool = True) -> datetime:
    """The earliest time ≥ now the account may post: after the gap, under the daily cap, past any
    limit the network announced and, when `windowed`, inside the posting window."""
    at = now
    if last_dispatched is not None:
        at = max(at, last_dispatched + timedelta(seconds=settings.min_gap))
    if parked_until is not None:
        at = max(at, parked_until)
    in_day = sorted(t for t in recent if t > at - timedelta(hours=24))
    if len(in_day) >= settings.daily_cap:
        at = max(at, in_day[-settings.daily_cap] + timedelta(hours=24))
    return in_window(settings, at) if windowed else at


def in_window(settings: AccountSettings, at: datetime) -> datetime:
    """`at` if it falls in the posting window, else the window's next opening — in the account's zone,
    so "07:00" stays 07:00 local across daylight-saving changes."""
    hours = settings.hours
    if hours is None:
        return at
    start, end = hours
    zone = settings.zone
    local_day = at.astimezone(zone).date()
    openings = []
    for offset in (-1, 0, 1):
        day = local_day + timedelta(days=offset)
        opens = _utc(datetime.combine(day, start, tzinfo=zone))
        closes = _utc(datetime.combine(day + timedelta(days=1) if end <= start else day, end, tzinfo=zone))
        if opens <= at < closes:
            return at
        if at < opens:
            openings.append(opens)
    return min(openings)


def _utc(local: datetime) -> datetime:
    # A local time skipped by a spring-forward change is read with the offset before it (fold=0):
    # 02:30 on that night becomes 03:30, the first moment of the window that exists.
    return local.astimezone(UTC)


def recent_posts(session: Session, account: SocialAccount, now: datetime) -> list[datetime]:
    """When the account posted in the last 24 hours (a post taken back since counts: the network counted it),
    and the posts in flight (counted as now)."""
    posted = session.scalars(select(Post.posted_at).where(
        Post.account_id == account.id, Post.posted_at > now - timedelta(hours=24),
        Post.status.in_(("posted", "ambiguous", "retracted")))).all()
    flying = session.scalar(select(func.count()).where(Post.account_id == account.id, Post.status == "sending"))
    return list(posted) + [now] * (flying or 0)


def queue(session: Session, account: SocialAccount) -> list[Post]:
    """The account's waiting posts in the order they go: breaking lane first, then editors' scheduled
    ones by their time, then the newest stories first."""
    rows = session.scalars(
        select(Post).join(Article).where(Post.account_id == account.id, Post.status == "pending")
        .order_by((Post.lane == "breaking").desc(), Post.scheduled_at.is_(None), Post.scheduled_at,
                  Article.published_at.desc(), Post.id)
    ).all()
    return list(rows)


def too_old(post: Post, settings: AccountSettings, now: datetime) -> bool:
    """A story that waited past the account's max age is not news any more; an editor's schedule is kept."""
    if post.scheduled_at is not None or post.share > 0 or not settings.max_age:
        return False
    return post.article.published_at < now - timedelta(seconds=settings.max_age)


def dispatch(session: Session, settings: Settings, now: datetime | None = None) -> list[int]:
    """The tick: posts whose worker died go back, those of a withdrawn story are skipped; then at most one
    post per account, when its pace allows. Each one returned is leased (settings.leases.requeue) so the next
    tick doesn't queue it again."""
    now, leases = now or utcnow(), settings.leases
    # A claim nobody refreshed: its worker died mid-attempt, which may have reached the network (X keeps no
    # idempotency key): a "duplicate" answer to the next attempt then means it went out.
    ledger.revive(session, Post, now, leases, next_attempt_at=now, uncertain=True)
    # A story withdrawn since its post was planned (or while its worker was away): that post never goes.
    for post in session.scalars(select(Post).join(Article).where(Post.status == "pending",
                                                                 Article.withdrawn_at.is_not(None))):
        post.status, post.error = "skipped", withdrawn_reason(post.article)
    if accounts.social_paused(session):
        return []
    ids = []
    for account in session.scalars(select(SocialAccount).where(SocialAccount.status == "active")).all():
        post = _next_for(session, account, now)
        if post is not None:
            post.next_attempt_at, post.planned_at = now + leases.requeue, now
            account.last_dispatched_at = now
            ids.append(post.id)
    return ids


def _next_for(session: Session, account: SocialAccount, now: datetime) -> Post | None:
    settings = accounts.settings_of(account)
    recent = recent_posts(session, account, now)
    anytime = next_slot(settings, now, account.last_dispatched_at, recent, account.parked_until, windowed=False)
    if anytime > now:
        return None
    windowed = in_window(settings, now) <= now
    for post in queue(session, account):
        if post.next_attempt_at is not None and post.next_attempt_at > now:
            continue  # leased to a task already, or waiting out a retry
        if post.scheduled_at is not None and post.scheduled_at > now:
            continue
        # The window is for the regular flow; breaking news and an editor's chosen time go when due.
        if not windowed and post.lane != "breaking" and post.scheduled_at is None:
            continue
        if too_old(post, settings, now):
            post.status = "skipped"
            post.error = (f"not posted: the story was {_age(now - post.article.published_at)} old when its turn "
                          f"came (this account's max age is {_age(timedelta(seconds=settings.max_age))})")
            continue
        return post
    return None


def projected(session: Session, account: SocialAccount, now: datetime | None = None,
              skip_too_old: bool = True) -> list[tuple[Post, datetime]]:
    """When each waiting post is expected to go, at the account's pace (for the queue and dry runs);
    one that will be too old by its turn is left out (the tick skips it, with the reason), unless
    not `skip_too_old`."""
    now = now or utcnow()
    settings = accounts.settings_of(account)
    recent, last = recent_posts(session, account, now), account.last_dispatched_at
    plan_ = []
    for post in queue(session, account):
        floor = max(now, post.scheduled_at or now, post.next_attempt_at or now)
        at = next_slot(settings, floor, last, recent, account.parked_until,
                       windowed=post.lane != "breaking" and post.scheduled_at is None)
        if skip_too_old and too_old(post, settings, at):
            continue  # it will be skipped when its turn comes: it takes no slot
        plan_.append((post, at))
        last = at
        recent.append(at)
    return plan_


def queues(session: Session, now: datetime | None = None,
           skip_too_old: bool = True) -> list[tuple[SocialAccount, list[tuple[Post, datetime]]]]:
    """Every account, by name, with its waiting posts at the times its pace expects them (`projected`):
    the social status, as `syndicate social status`, the desk's Today page and its calendar show it."""
    return [(account, projected(session, account, now, skip_too_old)) for account in accounts.all_accounts(session)]


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours >= 1 else f"{delta.total_seconds() / 60:.0f} min"


# ── publishing ───────────────────────────────────────────────────────────────


def publish(sessions: sessionmaker, settings: Settings, client: SocialClient, post_id: int, token: str,
            clock=utcnow, card=None, image: images.Picture | None = None, image_error: str | None = None) -> Post:
    """Claim → publish → record. A post already published (or held, cancelled) is never touched again.
    `image`: its picture (`image_for`), or `image_error`: why it goes without — recorded on the post."""
    with sessions() as session:
        with session.begin():
            # The same task delivered again (its worker died mid-attempt) resumes its own claim: that attempt
            # may have reached the network, as a revived one may.
            resumed = session.scalar(select(Post.id).where(Post.id == post_id, Post.status == "sending",
                                                           Post.claimed_by == token)) is not None
            claimed = ledger.claim(session, Post, Post.id == post_id, token, clock())
            post = session.get(Post, post_id)
            if claimed and resumed:
                post.uncertain = True
            if claimed and post.article.withdrawn_at is not None:  # withdrawn after the tick picked it
                post.status, post.error, post.claimed_by = "skipped", withdrawn_reason(post.article), None
                return post
            if claimed:
                request = PostRequest(teaser=teaser_of(post), card=card, post_id=post.id, created_at=post.created_at,
                                      kept_rkey=_record_key(post), language=post.article.language, image=image)
        if not claimed:
            return post
        try:
            published = client.publish(request)
        except DuplicatePost as e:
            with session.begin():
                if not _held(session, post, token):
                    return post  # its claim went stale and another task took it: that one records
                if post.uncertain:
                    # An earlier attempt had no answer and X had taken it: it is out there, probably.
                    return _settle(post, "ambiguous", clock, f"{e} — an earlier attempt had no answer, so it was "
                                   "probably posted then; check the account")
                return _settle(post, "skipped", clock, f"{e}; not retried")
        except AccountProblem as e:
            with session.begin():
                if not _held(session, post, token):
                    return post  # its claim went stale and another task took it: that one records
                accounts.pause(post.account, str(e))
                post.status, post.claimed_by, post.error = "pending", None, str(e)
                post.next_attempt_at = clock()
            return post
        except TransportError as e:
            with session.begin():
                if not _held(session, post, token):
                    return post  # its claim went stale and another task took it: that one records
                if e.code == 429 or e.retry_at is not None:
                    # Waiting out a limit the network announced is not a failed attempt.
                    post.account.parked_until = max(e.retry_at or clock() + PARK_DEFAULT, clock())
                    post.status, post.claimed_by, post.error = "pending", None, str(e)
                    post.next_attempt_at = clock()
                    return post
                post.attempts += 1
                post.uncertain = post.uncertain or getattr(e, "uncertain", False)
                if e.permanent or post.attempts >= MAX_ATTEMPTS:
                    return _settle(post, "failed", clock, str(e) if e.permanent
                                   else f"gave up after {post.attempts} attempts: {e}")
                post.status, post.claimed_by, post.error = "pending", None, str(e)
                post.next_attempt_at = clock() + ledger.backoff(post.attempts, RETRY_BASE, RETRY_MAX)
            return post
        except Exception as e:  # a bug, a link or an answer nobody foresaw: this post's failure, not the lane's
            log.exception("post %d: unexpected %s", post_id, type(e).__name__)
            with session.begin():
                if not _held(session, post, token):
                    return post  # its claim went stale and another task took it: that one records
                post.attempts += 1
                post.uncertain = True  # it may have reached the network before it failed
                said = f"{type(e).__name__}: {e}"
                if post.attempts >= MAX_ATTEMPTS:
                    return _settle(post, "failed", clock, f"gave up after {post.attempts} attempts: {said}")
                post.status, post.claimed_by, post.error = "pending", None, said
                post.next_attempt_at = clock() + ledger.backoff(post.attempts, RETRY_BASE, RETRY_MAX)
            return post
        with session.begin():
            if not _held(session, post, token):
                # Its claim went stale mid-request (far past every deadline) and another task took it: that
                # one records its own outcome; this one can only say what it did.
                log.warning("post %d went out as %s after this task's claim was taken over: it may be on the "
                            "network twice", post_id, published.remote_url)
                return post
            _settle(post, "posted", clock, None)
            post.posted_at, post.dry_run = clock(), client.dry_run
            post.remote_id, post.remote_url = published.remote_id, published.remote_url
            if published.remote_id is None:
                post.error = "posted, but the network didn't say under which id"
            left_out = image_error or published.image_error
            if left_out:  # beside the picture checked at planning: what it went without, and why
                post.payload = {**(post.payload or {}), "image_error": left_out}
            if getattr(published, "limit_reset", None) is not None:  # the live 24-hour limit is used up
                post.account.parked_until = published.limit_reset
        return post


def _record_key(post: Post) -> str | None:
    """A Bluesky post's record key, kept on its row from its first attempt: every retry sends the same one.
    A post an earlier version already tried keeps the key that version made (the post id mod 1024 as its
    clock id, which a batch of more than 1,024 posts could repeat), so its retry still finds its record."""
    if post.account.network != "bluesky":
        return None
    payload = post.payload or {}
    if "rkey" not in payload:
        tried_before = post.attempts > 0 or post.uncertain
        rkey = tid(post.created_at, post.id % 1024) if tried_before else record_key(post.id, post.created_at)
        post.payload = payload = {**payload, "rkey": rkey}
    return payload["rkey"]


def _held(session: Session, post: Post, token: str) -> bool:
    """Whether this task's claim on the post still holds: read again, and locked, before its outcome is
    written (ledger: an outcome only while the claim holds)."""
    session.refresh(post, with_for_update=True)
    return post.status == PostStatus.SENDING and post.claimed_by == token


def _settle(post: Post, status: str, clock, error: str | None) -> Post:
    post.status, post.error, post.claimed_by = status, error, None
    if status in ("posted", "ambiguous", "skipped"):  # the network answered this attempt
        post.attempts += 1
    if status == "ambiguous":
        post.posted_at = clock()
    return post


# ── editors' actions ─────────────────────────────────────────────────────────


def newest(session: Session, limit: int, statuses: tuple[str, ...] | list[str] = (),
           account: SocialAccount | None = None) -> list[Post]:
    """Posts, the newest first (by id), at most `limit`: with one of `statuses` only, if any; of `account`
    only, if given."""
    query = select(Post).order_by(Post.id.desc()).limit(limit)
    if statuses:
        query = query.where(Post.status.in_(statuses))
    if account is not None:
        query = query.where(Post.account_id == account.id)
    return list(session.scalars(query))


def by_id(session: Session, post_id: int) -> Post:
    return db.row(session, Post, post_id, f"no post {post_id}; `syndicate post list` shows them")


def _waiting(post: Post, action: str) -> None:
    if post.status not in ("pending", "held"):
        raise InvalidInput(f"post {post.id} is {post.status}: only a waiting (pending or held) post can be {action}")


def edit_text(post: Post, text: str) -> teaser.Teaser:
    """An editor's own teaser, measured by the account's network rules; never recomposed afterwards."""
    _waiting(post, "edited")
    settings = accounts.settings_of(post.account)
    measured = teaser.measure(settings.rules(post.account.network), text,
                              (post.payload or {}).get("url", post.article.url))
    post.text, post.payload, post.edited = measured.text, payload_of(measured) | _kept(post), True
    return measured


def _kept(post: Post) -> dict:
    """What an edit keeps of the payload: the checked card and picture, and the record key an earlier attempt
    used."""
    keep = ("card", "card_error", "image", "image_error", "rkey")
    return {k: v for k, v in (post.payload or {}).items() if k in keep}


def schedule(post: Post, at: datetime) -> None:
    """Not before `at` (the posting window then doesn't apply: an editor chose the time)."""
    _waiting(post, "scheduled")
    post.scheduled_at, post.status, post.next_attempt_at = at, "pending", None


def hold(post: Post) -> None:
    _waiting(post, "held")
    post.status = "held"


def release(post: Post) -> None:
    if post.status != "held":
        raise InvalidInput(f"post {post.id} is {post.status}, not held")
    post.status, post.next_attempt_at = "pending", None


def cancel(post: Post) -> None:
    _waiting(post, "cancelled")
    post.status, post.error = "cancelled", "cancelled by an editor"


def make_breaking(post: Post) -> None:
    _waiting(post, "moved to the breaking lane")
    post.lane = "breaking"


def reshare(session: Session, article: Article, account: SocialAccount, at: datetime | None = None,
            now: datetime | None = None, env_x: bool = False) -> Post:
    """An editor's explicit second (third…) post of a story: a new row, never a retry of the first."""
    if article.withdrawn_at is not None:
        raise InvalidInput(f"article {article.id} was withdrawn: it is not posted again")
    now = now or utcnow()
    shares = session.scalar(select(func.max(Post.share)).where(Post.article_id == article.id,
                                                               Post.account_id == account.id))
    composed = compose(account, article)
    post = Post(article_id=article.id, account_id=account.id, share=(shares + 1) if shares is not None else 0,
                text=composed.text, payload=payload_of(composed), dry_run=accounts.is_dry_run(account, env_x),
                scheduled_at=at, created_at=now, next_attempt_at=None)
    session.add(post)
    session.flush()
    return post


def describe(post: Post, planned: datetime | None = None) -> dict:
    p = post.payload or {}
    return dict(id=post.id, article_id=post.article_id, account=post.account.name, network=post.account.network,
                share=post.share, status=post.status, lane=post.lane, dry_run=post.dry_run, edited=post.edited,
                text=post.text, length=p.get("length"), limit=p.get("limit"), url=p.get("url"),
                scheduled_at=post.scheduled_at, planned_at=planned or post.planned_at, posted_at=post.posted_at,
                remote_url=post.remote_url, attempts=post.attempts, error=post.error,
                retracted_at=post.retracted_at, retracted_by=post.retracted_by,
                card=p.get("card"), card_error=p.get("card_error"), image=p.get("image"),
                image_error=p.get("image_error"))



# ── taking back ──────────────────────────────────────────────────────────────

ClientFor = Callable[[SocialAccount, bool], SocialClient]  # (account, dry run?) → the client to take a post back with
TAKEN_BACK = (PostStatus.POSTED, PostStatus.AMBIGUOUS)  # what may be on the network: these become retracted


@dataclass(frozen=True)
class Retraction:
    """What taking one post back did, in the editor's words. `outcome`: retracted (deleted on its network, or
    found gone), by hand (recorded, but it has no id to delete by: the editor deletes it on the network),
    cancelled (it had not gone out), unchanged (taken back already, or never posted), busy (going out this
    very moment) or failed (the network refused or could not be reached: it is still up)."""

    post_id: int
    account: str
    network: str
    outcome: str
    message: str

    @property
    def settled(self) -> bool:
        """Nothing more for the editor to do about it."""
        return self.outcome in ("retracted", "cancelled", "unchanged")


def withdrawn_reason(article: Article) -> str:
    return f"not posted: the story was withdrawn by {article.withdrawn_by} on {article.withdrawn_at:%Y-%m-%d %H:%M} UTC"


def retract(sessions: sessionmaker, client_for: ClientFor, post_id: int, by: str, clock=utcnow) -> Retraction:
    """Take a post back, `by` an editor (or "cli").

    A posted one is deleted on its network — outside any transaction, as publish posts — then recorded
    retracted with who and when; one the network no longer has counts as deleted. One that has no id there
    (ambiguous: X called a retry a duplicate; or the network never said) can't be deleted by id: it is
    recorded, and the editor told to delete it by hand. A post that hasn't gone out is cancelled. One going
    out this very moment is refused: in a minute it is posted, and can be taken back. Twice changes nothing."""
    with sessions() as session:
        with session.begin():
            post = by_id(session, post_id)
            said = dict(post_id=post.id, account=post.account.name, network=post.account.network)
            name = accounts.settings_of(post.account).rules(post.account.network).display_name
            if post.status in (PostStatus.PENDING, PostStatus.HELD):
                cancelled = session.execute(
                    update(Post).where(Post.id == post.id, Post.status.in_((PostStatus.PENDING, PostStatus.HELD)))
                    .values(status="cancelled", error=f"taken back by {by} before it went out")
                    .execution_options(synchronize_session=False)).rowcount
                if cancelled:
                    return Retraction(**said, outcome="cancelled",
                                      message=f"it had not gone out: cancelled, it never will ({name})")
                session.refresh(post)  # a worker claimed it meanwhile
            if post.status == PostStatus.SENDING:
                return Retraction(**said, outcome="busy", message=f"it is being posted to {name} this very moment: "
                                  "try again in a minute, once it is out")
            if post.status == PostStatus.RETRACTED:
                return Retraction(**said, outcome="unchanged", message=f"taken back already, by {post.retracted_by} "
                                  f"on {post.retracted_at:%Y-%m-%d %H:%M} UTC")
            if post.status not in TAKEN_BACK:
                return Retraction(**said, outcome="unchanged",
                                  message=f"it never went out ({post.status}): nothing to take back")
            if post.remote_id is None:
                note = (f"{name} never said under which id it took this post, so it can't be deleted from here: "
                        f"find it on {post.account.name}'s {name} page and delete it by hand")
                _retracted(post, by, clock(), note)
                return Retraction(**said, outcome="by hand", message=f"recorded as taken back, but {note}")
            client = client_for(post.account, post.dry_run)
            if client.dry_run and not post.dry_run:
                return Retraction(**said, outcome="failed", message=(
                    f"it went out live, but {post.account.name} is a dry run now: make it live again "
                    f"(`syndicate account edit {post.account.name} --live`) to take it back, or delete it by hand"
                    f"{_at(post.remote_url)}"))
            request = RetractRequest(remote_id=post.remote_id, post_id=post.id, created_at=post.created_at,
                                     kept_rkey=(post.payload or {}).get("rkey"))
            remote_url = post.remote_url
    try:
        retracted = client.retract(request)
    except Exception as e:  # the network's refusal, or an answer nobody foresaw: this post's, the others go on
        if not isinstance(e, TransportError):
            log.exception("retracting post %d: unexpected %s", post_id, type(e).__name__)
        message = _not_taken_back(e, remote_url)
        with sessions() as session, session.begin():
            post = session.get(Post, post_id)
            if post is not None and post.status in TAKEN_BACK:
                post.error = f"not taken back: {message}"
        return Retraction(**said, outcome="failed", message=message)
    if client.dry_run:
        note = f"dry run: nothing sent; the deletion {name} would get is written to " \
               f"{getattr(client, 'folder', 'the outbox')}"
    elif retracted.gone_already:
        note = f"{name} had it no more (deleted by hand, or by an earlier try)"
    else:
        note = None
    with sessions() as session, session.begin():
        post = session.get(Post, post_id, with_for_update=True)
        if post is None or post.status not in TAKEN_BACK:  # another editor took it back meanwhile
            return Retraction(**said, outcome="unchanged", message="taken back meanwhile by someone else")
        _retracted(post, by, clock(), note)
    return Retraction(**said, outcome="retracted", message=note or f"deleted from {name}" + _at(remote_url))


def _retracted(post: Post, by: str, at: datetime, note: str | None) -> None:
    post.status, post.retracted_at, post.retracted_by, post.error = "retracted", at, by, note


def _not_taken_back(e: Exception, remote_url: str | None) -> str:
    """Why a deletion failed, and what to do: wait and try again, or delete it by hand."""
    if not isinstance(e, TransportError):
        return f"{type(e).__name__}: {e}; it is still up{_at(remote_url)}"
    if e.retry_at is not None:
        return f"{e}; it is still up: try again after {e.retry_at:%Y-%m-%d %H:%M} UTC"
    if not e.permanent:
        return f"{e}; it is still up: try again in a few minutes"
    return f"{e}; it is still up: delete it by hand{_at(remote_url)}" if remote_url else str(e)


def _at(remote_url: str | None) -> str:
    return f" at {remote_url}" if remote_url and links.href(remote_url) else ""


@dataclass(frozen=True)
class Withdrawal:
    """A story taken back: off the archive and its feed, out of every edition yet to go, each of its posts
    taken back (`retractions`). `mailed`: the editions that went out with it — mails can't be recalled."""

    article_id: int
    title: str
    withdrawn_at: datetime
    withdrawn_by: str
    already: bool  # withdrawn before: this time only its posts were tried again
    mailed: list[dict]
    unsent: list[str]  # what became of the editions yet to go that held it
    retractions: list[Retraction]


def withdraw(sessions: sessionmaker, settings: Settings, client_for: ClientFor, article_id: int, by: str,
             clock=utcnow) -> Withdrawal:
    """Withdraw a story, `by` an editor (or "cli"): recorded on the article (the archive and the Atom feed
    show a short notice instead), taken out of the editions that haven't gone out, never planned, cut or
    posted again; then every post of it taken back, one by one — a network that fails stops none of the
    others. Doing it again retries the posts that weren't taken back."""
    from syndicate.newsletters import editions  # the renderer and premailer: only where a story is withdrawn

    with sessions() as session, session.begin():
        article = stored.article_by_id(session, article_id,
                                       f"no article {article_id}; `syndicate article list` shows their ids")
        already = article.withdrawn_at is not None
        if not already:
            article.withdrawn_at, article.withdrawn_by = clock(), by
            session.flush()
        mailed, unsent = editions.withdraw(session, article, settings)
        post_ids = list(session.scalars(select(Post.id).where(Post.article_id == article.id).order_by(Post.id)))
        record = dict(article_id=article.id, title=article.title, withdrawn_at=article.withdrawn_at,
                      withdrawn_by=article.withdrawn_by, already=already, mailed=mailed, unsent=unsent)
    return Withdrawal(**record, retractions=[retract(sessions, client_for, post_id, by, clock) for post_id in post_ids])
