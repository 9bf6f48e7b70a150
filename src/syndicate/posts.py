"""article → post: one teaser per (article, account), written to the ledger before it is published."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from twitter_text import parse_tweet

from syndicate.config import Settings
from syndicate.errors import DuplicatePost, TransportError
from syndicate.models import Article, Post, SocialAccount, utcnow
from syndicate.social import Published, SocialClient
from syndicate.templating import render

X_LIMIT = 280
ELLIPSIS = "…"
STALE_CLAIM = timedelta(minutes=15)
REQUEUE_AFTER = timedelta(minutes=5)
RETRY_BASE, RETRY_MAX, MAX_ATTEMPTS = 60, 1800, 8


# ── the teaser ───────────────────────────────────────────────────────────────


def x_length(text: str) -> int:
    """X's weighted length: URLs 23, CJK and emoji 2, after NFC."""
    return parse_tweet(text).weightedLength


def compose_teaser(article: Article, network: str = "x") -> str:
    """Headline, lead when it fits, and the link; the headline is shortened at a word, never the URL."""
    for lead in (article.lead, ""):
        text = render(f"social/{network}.txt", title=article.title, lead=lead, url=article.url).strip()
        if x_length(text) <= X_LIMIT:
            return text
    # The longest run of the headline's first words that fits, found by bisection.
    words = article.title.split()

    def shortened(n: int) -> str:
        title = " ".join(words[:n]).rstrip(",;:—-") + ELLIPSIS
        return render(f"social/{network}.txt", title=title, lead="", url=article.url).strip()

    low, high = 0, len(words) - 1  # invariant: `low` words fit (0 words: the link alone)
    while low < high:
        middle = (low + high + 1) // 2
        if x_length(shortened(middle)) <= X_LIMIT:
            low = middle
        else:
            high = middle - 1
    return shortened(low) if low else article.url


# ── the ledger ───────────────────────────────────────────────────────────────


def ensure_default_account(session: Session) -> SocialAccount:
    """One X account named "x": it posts for real when credentials are set, dry-run otherwise."""
    account = session.scalar(select(SocialAccount).where(SocialAccount.name == "x"))
    if account is None:
        account = SocialAccount(name="x", network="x")
        session.add(account)
        session.flush()
    return account


def plan(session: Session, settings: Settings, now: datetime | None = None) -> list[int]:
    """A pending post for each article first seen after its account was connected, and not yet planned."""
    now = now or utcnow()
    new_ids = []
    for account in session.scalars(select(SocialAccount).where(SocialAccount.status == "active")).all():
        planned = select(Post.article_id).where(Post.account_id == account.id)
        articles = session.scalars(
            select(Article).where(Article.first_seen_at >= account.created_at, Article.id.not_in(planned))
            .order_by(Article.published_at)
        ).all()
        for article in articles:
            post = Post(article_id=article.id, account_id=account.id, text=compose_teaser(article, account.network),
                        dry_run=settings.dry_run_social, created_at=now, next_attempt_at=now)
            session.add(post)
            session.flush()
            new_ids.append(post.id)
    return new_ids


def due(session: Session, now: datetime) -> list[int]:
    """Posts that need a task: new or due for a retry, or held by a worker that died.

    Each one returned is leased for a few minutes (its next attempt moved forward),
    so a task still waiting in the queue is not joined by another on every tick.
    """
    stale = and_(Post.status == "sending", Post.claimed_at <= now - STALE_CLAIM)
    session.execute(update(Post).where(stale).values(status="pending", claimed_by=None, next_attempt_at=now)
                    .execution_options(synchronize_session=False))
    ids = list(session.scalars(select(Post.id).where(Post.status == "pending", Post.next_attempt_at <= now)))
    if ids:
        session.execute(update(Post).where(Post.id.in_(ids)).values(next_attempt_at=now + REQUEUE_AFTER)
                        .execution_options(synchronize_session=False))
    return ids


def publish(Session: sessionmaker, settings: Settings, client: SocialClient, post_id: int, token: str,
            clock=utcnow) -> Post:
    """Claim → publish → record. A post already published is never touched again."""
    with Session() as session:
        with session.begin():
            claimed = session.execute(
                update(Post)
                .where(Post.id == post_id,
                       or_(Post.status == "pending", and_(Post.status == "sending", Post.claimed_by == token)))
                .values(status="sending", claimed_by=token, claimed_at=clock())
                .execution_options(synchronize_session=False)
            ).rowcount
            post = session.get(Post, post_id)
        if not claimed:
            return post
        try:
            published = client.publish(post.text, f"post-{post.id}")
        except DuplicatePost as e:
            if post.attempts == 0:
                return _failed(session, post, e, clock)
            # An earlier attempt timed out or broke off after X had taken it: it is out there.
            published = Published(None, None)
            post.error = f"{e} — an earlier attempt had no answer, so it was probably posted then"
        except TransportError as e:
            if e.permanent:
                return _failed(session, post, e, clock)
            with session.begin():
                post.attempts += 1
                post.error, post.claimed_by = str(e), None
                # Waiting out a rate limit the network announced is not a failed attempt.
                if post.attempts >= MAX_ATTEMPTS and e.retry_at is None:
                    post.status = "failed"
                else:
                    delay = timedelta(seconds=min(RETRY_BASE * 2 ** (post.attempts - 1), RETRY_MAX))
                    post.status = "pending"
                    post.next_attempt_at = max(clock() + delay, e.retry_at or clock())
            return post
        with session.begin():
            post.status, post.posted_at, post.claimed_by = "posted", clock(), None
            post.dry_run = client.dry_run
            post.remote_id, post.remote_url = published.remote_id, published.remote_url
            if published.remote_id is not None:
                post.error = None
            post.attempts += 1
        return post


def _failed(session: Session, post: Post, error: TransportError, clock) -> Post:
    with session.begin():
        post.status, post.error, post.claimed_by = "failed", str(error), None
        post.attempts += 1
    return post
