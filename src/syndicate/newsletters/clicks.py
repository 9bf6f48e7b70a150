"""Clicks on an edition's stories, counted per link and never per reader.

A newsletter that counts clicks (Newsletter.count_clicks) gets its story links rendered, once per edition, as
BASE_URL/r/<edition id>/<link number>.<mark>: the same in every reader's copy, so nothing in the link says who
followed it. The redirect adds one to that link's row (EditionLink) and sends the reader to the address stored
for it, and only there: a link we didn't make (its mark doesn't hold) or that isn't stored finds nothing.
Clicks before the edition goes out are an editor's checks (preview, test mail) and aren't counted.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from syndicate import links, tokens
from syndicate.config import Settings
from syndicate.errors import NotFound
from syndicate.models import Article, Edition, EditionLink

NOT_OURS = "this link isn't one of ours, or it was cut short; copy the whole link from the email"


def link_url(settings: Settings, edition_id: int, number: int) -> str:
    return f"{settings.base_url}/r/{edition_id}/{number}.{tokens.link_mark(settings.secret_key, edition_id, number)}"


class Counted:
    """A story as an edition's body template sees it when clicks are counted: its `url` is the counting link;
    everything else is the story's own."""

    def __init__(self, article: Article, url: str):
        self._article, self.url = article, url

    def __getattr__(self, name: str):
        return getattr(self._article, name)


def counted(session: Session, settings: Settings, edition: Edition, articles: list[Article]) -> list:
    """The edition's stories with counting links, its link rows made anew (one per story with a web address,
    numbered by place); called at each render, which happens only before the edition goes out."""
    session.execute(delete(EditionLink).where(EditionLink.edition_id == edition.id))
    shown = []
    for number, article in enumerate(articles, 1):
        url = links.href(article.url)
        if not url:  # no web address: the template shows the story without a link, as it always did
            shown.append(article)
            continue
        session.add(EditionLink(edition_id=edition.id, number=number, article_id=article.id, url=url, clicks=0))
        shown.append(Counted(article, link_url(settings, edition.id, number)))
    session.flush()
    return shown


def target(session: Session, settings: Settings, edition_id: int, link: str) -> tuple[str, bool]:
    """Where `link` ("<number>.<mark>") of the edition goes, and whether a click on it counts now (the edition
    has gone out). NotFound for a link we didn't make or no longer keep."""
    number, _, mark = link.partition(".")
    if not (number.isdigit() and len(number) <= 6) or not tokens.link_mark_holds(
            settings.secret_key, edition_id, int(number), mark):
        raise NotFound(NOT_OURS)
    row = session.execute(
        select(EditionLink.url, Edition.started_at).join(Edition, Edition.id == EditionLink.edition_id)
        .where(EditionLink.edition_id == edition_id, EditionLink.number == int(number))).first()
    url = links.href(row.url) if row else ""  # checked again on the way out: only ever a web address
    if not url:
        raise NotFound("this story link isn't kept any more; the story may still be on the site")
    return url, row.started_at is not None


def count(session: Session, edition_id: int, number: int) -> None:
    """One more click on the link: a single UPDATE, so clicks at the same moment all count."""
    session.execute(update(EditionLink).where(EditionLink.edition_id == edition_id, EditionLink.number == number)
                    .values(clicks=EditionLink.clicks + 1))


def per_link(session: Session, edition_id: int) -> list[dict]:
    """The edition's counted links in order: number, story, address and clicks."""
    rows = session.execute(
        select(EditionLink.number, EditionLink.article_id, Article.title, EditionLink.url, EditionLink.clicks)
        .outerjoin(Article, Article.id == EditionLink.article_id)
        .where(EditionLink.edition_id == edition_id).order_by(EditionLink.number))
    return [dict(number=n, article_id=a, title=title or url, url=url, clicks=clicks)
            for n, a, title, url, clicks in rows]


class RecentClicks:
    """Clicks seen lately, so that a reader's double click, or a mail scanner opening a link again, counts once.

    Kept only in this process's memory, as a keyed hash of (client address, edition, link) whose key is made at
    start and never written anywhere: nothing a click leaves can be traced to an address, even by us, and it is
    all gone at a restart. At most `limit` entries (100,000 take about 20 MB). With several web processes each
    keeps its own, so a click repeated through another process can count twice: a small over-count, against
    storing anything about a reader."""

    def __init__(self, window: float = 600.0, limit: int = 100_000):
        self.window, self.limit = window, limit
        self._key = secrets.token_bytes(32)
        self._seen: dict[bytes, float] = {}
        self._lock = threading.Lock()  # routes run in a thread pool

    def first(self, client: str, edition_id: int, number: int, now: float | None = None) -> bool:
        """True if this client hasn't followed this link within the window (and remember that it has now)."""
        now = time.monotonic() if now is None else now
        digest = hmac.new(self._key, f"{client}\x00{edition_id}\x00{number}".encode(), hashlib.sha256).digest()[:16]
        with self._lock:
            at = self._seen.get(digest)
            if at is not None and now - at < self.window:
                return False
            self._seen.pop(digest, None)  # to the end: the dict stays oldest first
            self._seen[digest] = now
            if len(self._seen) > self.limit:
                self._trim(now)
            return True

    def _trim(self, now: float) -> None:
        """Drop the expired from the front, and the oldest until a tenth is free."""
        for digest, at in list(self._seen.items()):
            if now - at < self.window and len(self._seen) <= self.limit * 9 // 10:
                break
            del self._seen[digest]
