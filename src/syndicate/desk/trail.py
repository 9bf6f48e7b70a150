"""Where each article went: the editions that carried it and the posts that teased it.

An article's trail, as a subscriber's timeline (timeline.py) is theirs: read from the ledger, nothing kept
apart. Editors ask it of the recent stories ("did this one go out?") and of one story in detail.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syndicate.ingest import stored
from syndicate.models import Article, Edition, EditionArticle, Newsletter, Post
from syndicate.social import posts

PAGE = 50  # articles per page


def describe(article: Article) -> dict:
    return dict(id=article.id, title=article.title, url=article.url, feed_id=article.feed_id,
                feed=article.feed.url if article.feed else None, author=article.author,
                categories=list(article.categories or []), lead=article.lead, image_url=article.image_url,
                published_at=article.published_at, first_seen_at=article.first_seen_at,
                updated_at=article.updated_at, withdrawn_at=article.withdrawn_at, withdrawn_by=article.withdrawn_by)


def recent(session: Session, q: str = "", feed_id: int | None = None, page: int = 1) -> dict:
    """The newest articles (by when we first saw them), PAGE at a time, each with where it went: how many
    editions and posts, by status. `q` is looked for in the title and the link, in any case."""
    total = stored.count_articles(session, q=q, feed_id=feed_id)
    page = max(page, 1)
    rows = stored.newest_articles(session, PAGE, (page - 1) * PAGE, q=q, feed_id=feed_id, with_feed=True)
    ids = [a.id for a in rows]
    went: dict[int, dict] = defaultdict(lambda: dict(editions={}, posts={}))
    for article_id, status, n in session.execute(
            select(EditionArticle.article_id, Edition.status, func.count()).join(EditionArticle.edition)
            .where(EditionArticle.article_id.in_(ids)).group_by(EditionArticle.article_id, Edition.status)):
        went[article_id]["editions"][status] = n
    for article_id, status, n in session.execute(
            select(Post.article_id, Post.status, func.count()).where(Post.article_id.in_(ids))
            .group_by(Post.article_id, Post.status)):
        went[article_id]["posts"][status] = n
    articles = []
    for article in rows:
        where = went[article.id]
        articles.append(describe(article) | dict(
            editions=sum(where["editions"].values()), posts=sum(where["posts"].values()),
            editions_by_status=where["editions"], posts_by_status=where["posts"]))
    return dict(articles=articles, total=total, page=page, pages=max((total + PAGE - 1) // PAGE, 1),
                q=q, feed_id=feed_id)


def article_trail(session: Session, article_id: int) -> dict:
    """One article and everything it went into: editions (newsletter, number, status, when) and posts
    (account, network, status, when, the post on the network), oldest first, each with its desk page."""
    missing = f"no article {article_id}; `syndicate article list` shows the newest"
    article = stored.article_by_id(session, article_id, missing)
    editions = session.execute(
        select(Edition, Newsletter).join(EditionArticle, EditionArticle.edition_id == Edition.id)
        .join(Newsletter, Newsletter.id == Edition.newsletter_id)
        .where(EditionArticle.article_id == article_id).order_by(Edition.created_at, Edition.id)).all()
    teasers = session.scalars(select(Post).where(Post.article_id == article_id)
                              .order_by(Post.created_at, Post.id)).all()
    return describe(article) | dict(
        editions=[dict(id=e.id, newsletter=n.name, slug=n.slug, number=e.number, status=e.status, kind=e.kind,
                       subject=e.subject, scheduled_for=e.scheduled_for, sent_at=e.sent_at,
                       created_at=e.created_at, desk_url=f"/desk/editions/{e.id}") for e, n in editions],
        posts=[posts.describe(p) | dict(desk_url=f"/desk/posts/{p.id}") for p in teasers])
