"""article → post: one teaser per (article, account), in the ledger before it is published.

pending ──dispatch──▶ sending ──▶ posted | ambiguous | failed | skipped
   ▲  └─ held / cancelled by an editor        (ambiguous: X called it a duplicate after an unanswered try)
posted | ambiguous ──▶ retracted: an editor took it back (deleted on the network), or withdrew the story

Here: planning (a post per new story and account), publishing (claim → the network → the outcome) and an
editor's actions. Before a post goes, `checks` reads its page and picture once; `pace` decides when it
goes (one per account per tick, inside the account's window, gap and caps); `retraction` takes it back.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from syndicate import db, ledger, removals
from syndicate.config import Settings
from syndicate.errors import AccountProblem, DuplicatePost, InvalidInput, TransportError
from syndicate.ledger import POST_OPEN, PostStatus
from syndicate.models import Article, Post, SocialAccount, utcnow
from syndicate.newsletters.schedules import check_time
from syndicate.social import accounts, checks, images, teaser
from syndicate.social.accounts import AccountSettings
from syndicate.social.clients.base import PostRequest, SocialClient, record_key, tid
from syndicate.text import UNTITLED

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
    """With no account at all, one X account named "x": live with SYNDICATE_X_* credentials, dry-run otherwise.
    Not once an editor has deleted an account: none left is then their choice."""
    if session.scalar(select(func.count()).select_from(SocialAccount)) or removals.any_deleted(session, "account"):
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
            if (why := not_posted(article, account, account_settings)) is not None:
                post.text, post.payload, post.status, post.error = "", {}, "skipped", why
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

def prepare(sessions: sessionmaker, settings: Settings, now: datetime | None = None) -> list[int]:
    """Plan posts for new stories, then check the link card of every waiting post that has none yet: these,
    an editor's re-shares, and any an earlier run planned. The tick and `syndicate feed poll` both come here,
    so every post is checked once before the tick dispatches it, whichever way it was made. The new posts' ids."""
    with db.transaction(sessions) as session:
        ensure_default_account(session)
        new = plan(session, settings, now)
    checks.check_cards(sessions, settings)
    return new

def not_posted(article: Article, account: SocialAccount, account_settings: AccountSettings) -> str | None:
    """Why a story gets no post on this account, or None: a category the account leaves out, no link of its
    own, or nothing but a link to say (a teaser is never the bare link)."""
    if (category := account_settings.skips(article.categories)) is not None:
        return (f"not posted: the story is filed under {category!r}, which this account leaves out "
                f"(`syndicate account edit {account.name} --skip-category …` to change; re-share it to post it "
                "anyway)")
    if not article.url:  # its feed gave no address of its own (ingest says why on the feed)
        return ("not posted: the story has no link of its own (its feed's item links to nothing, or to the feed "
                "itself); fix the feed, or push the story with its link")
    if article.title == UNTITLED and not (article.lead or "").strip():
        return ("not posted: the story has no headline and no text, so its teaser would be the bare link; fix "
                "the feed's item, or push the story with its headline")
    return None


def withdrawn_reason(article: Article) -> str:
    return f"not posted: the story was withdrawn by {article.withdrawn_by} on {article.withdrawn_at:%Y-%m-%d %H:%M} UTC"


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
            if claimed and post.account.status == "disabled":  # disabled after the tick picked it
                post.status, post.claimed_by = "skipped", None
                post.error = f"not posted: the account {post.account.name} was {post.account.paused_reason}"
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


def schedule(post: Post, at: datetime, now: datetime | None = None) -> None:
    """Not before `at`, a time still ahead (the posting window then doesn't apply: an editor chose the time)."""
    _waiting(post, "scheduled")
    check_time(at, now)
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
    if account.status == "disabled":
        raise InvalidInput(f"account {account.name!r} is disabled: nothing is posted on it "
                           f"(`syndicate account enable {account.name}` first)")
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
