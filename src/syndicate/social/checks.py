"""What is read once before a post goes: its story's page, for the link card (Bluesky builds it; X and Mastodon
unfurl the link themselves), and its story's picture, fitted to the network — each outcome kept on the post."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from syndicate.config import Settings
from syndicate.ingest import fetch
from syndicate.models import Article, Post, utcnow
from syndicate.social import accounts, images, linkcard
from syndicate.social.accounts import AccountSettings

log = logging.getLogger(__name__)


CARD_DEADLINE = 8.0  # seconds for one article page (and, for Bluesky, its image)
CARD_BUDGET = 120.0  # seconds of reading pages in one call (the social tick's soft limit is 600)


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
            check_images(sessions, settings, ids, http=http)  # the other thing read once before a post goes


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


def check_images(sessions: sessionmaker, settings: Settings, post_ids: list[int], now: datetime | None = None,
                 http=None) -> None:
    """Each new post's picture: fetched once per address (through the ingest SSRF guard, over `http` when the
    caller has a client open), fitted to the account's network; the outcome on the post. An account with
    images off, or a story without one: nothing."""
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
    if not wanted:
        return
    with nullcontext(http) if http is not None else fetch.client(settings.allow_private_feeds,
                                                                  timeout=images.FETCH_DEADLINE) as http:
        for url, waiting in wanted.items():
            try:
                data = images.fetch_source(http, url, referer=waiting[0][3],
                                           deadline=time.monotonic() + images.FETCH_DEADLINE, now=now)
            except Exception as e:  # an address or answer nobody foresaw too: these posts go without it
                found.update({post_id: {"image_error": _without(e, url, "fetched")} for post_id, *_ in waiting})
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
    except Exception as e:  # a picture nobody foresaw too: the post goes without it
        return {"image_error": _without(e, url, "read")}


def _without(e: Exception, url: str, could_not: str | None = None) -> str:
    """Why a post goes without its picture: the reason a LeftOut gives, else what failed (logged: a
    picture or answer nobody foresaw)."""
    if isinstance(e, images.LeftOut):
        return f"posted without its picture: {e}"
    log.warning("picture %s: %s: %s", url, type(e).__name__, e)
    failed = f"{type(e).__name__}: {e}"
    return f"posted without its picture: it could not be {could_not} ({failed})" if could_not \
        else f"posted without its picture ({failed})"


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
    except Exception as e:  # the post goes without the picture rather than not at all
        return None, _without(e, url)
