"""Taking back: a posted teaser deleted on its network and recorded retracted, with who and when; a story
withdrawn — every post of it taken back, out of the editions yet to go and the public archive. Mail already
sent can't be recalled: the editor is told which editions carried it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from syndicate import links
from syndicate.config import Settings
from syndicate.errors import TransportError
from syndicate.ingest import stored
from syndicate.ledger import PostStatus
from syndicate.models import Post, SocialAccount, utcnow
from syndicate.social import accounts
from syndicate.social.clients.base import RetractRequest, SocialClient
from syndicate.social.posts import by_id

log = logging.getLogger(__name__)


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
