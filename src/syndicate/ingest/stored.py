"""What ingest stored, read for editors: each feed with how many articles it brought; the newest articles,
searched and a page at a time; one article. The desk, its API and the CLI list them with these queries.

Only the database here, none of the libraries that fetch and read feeds: `syndicate feed list` and
`syndicate article list` load this module and not feeds.py (bench/cli.py times them).
"""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload

from syndicate import db
from syndicate.models import Article, Feed


def feeds_with_article_counts(session: Session) -> list[tuple[Feed, int]]:
    """Every feed, by id, with how many articles it brought (one count query for all of them, rather than
    loading each feed's articles to count them)."""
    counts = dict(session.execute(select(Article.feed_id, func.count()).group_by(Article.feed_id)).all())
    return [(feed, counts.get(feed.id, 0)) for feed in session.scalars(select(Feed).order_by(Feed.id))]


def _matching(q: str, feed_id: int | None) -> list:
    """An article search's conditions: `q` in the title or the link, in any case; from feed `feed_id`."""
    conditions = []
    if q.strip():
        pattern = "%" + q.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conditions.append(or_(Article.title.ilike(pattern, escape="\\"), Article.url.ilike(pattern, escape="\\")))
    if feed_id is not None:
        conditions.append(Article.feed_id == feed_id)
    return conditions


def newest_articles(session: Session, limit: int, offset: int = 0, *, q: str = "", feed_id: int | None = None,
                    with_feed: bool = False) -> list[Article]:
    """The newest articles by when we first saw them (ties: the later id first), `limit` from `offset`;
    `q` is looked for in the title and the link, in any case; `feed_id` keeps one feed's. `with_feed` loads
    each one's feed along (one more query), for pages that show it."""
    query = (select(Article).where(*_matching(q, feed_id))
             .order_by(Article.first_seen_at.desc(), Article.id.desc()).offset(offset).limit(limit))
    if with_feed:
        query = query.options(selectinload(Article.feed))
    return list(session.scalars(query))


def count_articles(session: Session, *, q: str = "", feed_id: int | None = None) -> int:
    """How many articles newest_articles finds with the same `q` and `feed_id`, over every page."""
    return session.scalar(select(func.count()).select_from(Article).where(*_matching(q, feed_id))) or 0


def article_by_id(session: Session, article_id: int, missing: str | None = None) -> Article:
    """The article; NotFound, saying `missing` (where to find the ids) or its id, otherwise."""
    return db.row(session, Article, article_id, missing or f"no article {article_id}")
