"""What every network client shares: the request a teaser becomes, where it landed, the request that takes it
back, the Protocol a client keeps, the deadline of every request, and whether a failed request may still have
reached the network."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import httpx
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError

from syndicate.social.networks import Network

if TYPE_CHECKING:
    from syndicate.social.images import Picture
    from syndicate.social.linkcard import Card
    from syndicate.social.teaser import Teaser


TIMEOUT = 20.0  # seconds, every request: a stuck network must not hold a worker


TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"  # atproto's sortable base32


@dataclass(frozen=True)
class Published:
    remote_id: str | None  # None: known to be posted, but not under which id
    remote_url: str | None
    limit_reset: datetime | None = None  # this post used up a limit the network announced: nothing more until then
    image_error: str | None = None  # why the post went without its picture (or its alt text), when it did


class _PostKeys:
    """The keys a post is known by on a network, the same on every attempt: made from its ledger row."""

    post_id: int
    created_at: datetime
    kept_rkey: str | None

    @property
    def key(self) -> str:
        """The idempotency key: Mastodon answers a retry with the first post."""
        return post_key(self.post_id)

    @property
    def rkey(self) -> str:
        """The Bluesky record key: the one the row kept from its first attempt, else the one its row makes."""
        return self.kept_rkey or record_key(self.post_id, self.created_at)


@dataclass(frozen=True)
class PostRequest(_PostKeys):
    teaser: Teaser
    card: Card | None
    post_id: int  # the ledger row: unique per (article, account[, re-share])
    created_at: datetime  # the row's creation time (UTC); with post_id, what makes every retry look the same
    kept_rkey: str | None = None  # the record key the row keeps from its first attempt (posts.publish)
    language: str | None = None  # the story's (BCP 47); None: unknown, and the account's own language stands in
    image: Picture | None = None  # the story's picture, fitted to this network, with its alt text

    def language_or(self, account_language: str | None) -> str | None:
        """The language the post is in: the story's when known, else the account's."""
        return self.language or account_language


@dataclass(frozen=True)
class RetractRequest(_PostKeys):
    """Take a published post back: the network's own id of it (X's tweet id, Mastodon's status id, Bluesky's
    at:// URI), and the ledger row it came from."""

    remote_id: str
    post_id: int
    created_at: datetime  # the row's creation time: with post_id, the record key the post was written under
    kept_rkey: str | None = None  # the record key the row kept when it was posted (PostRequest.kept_rkey)


@dataclass(frozen=True)
class Retracted:
    gone_already: bool = False  # the network had no such post any more (deleted by hand, or by an earlier try)


class SocialClient(Protocol):
    network: str
    dry_run: bool

    def publish(self, request: PostRequest) -> Published:
        """Post the teaser (and its link card where the network needs us to build it)."""

    def retract(self, request: RetractRequest) -> Retracted:
        """Delete the post; one the network no longer has counts as deleted (`gone_already`)."""

    def verify(self) -> str:
        """A harmless authenticated read: who we post as, and where; AccountProblem says what to fix."""

    def rules(self) -> Network:
        """The length rules this account's teasers must fit."""


def post_key(post_id: int) -> str:
    return f"syndicate-post-{post_id}"


def tid(at: datetime, clock_id: int) -> str:
    """atproto's timestamp id: 53 bits of microseconds since the epoch, then a 10-bit clock id, in 13
    sortable base32 characters. Built from the ledger row, not the clock, so it is the same on every try."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # the database hands back naive UTC
    micros = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    number = (micros << 10) | (clock_id & 0x3FF)
    return "".join(TID_ALPHABET[(number >> shift) & 31] for shift in range(60, -1, -5))


def record_key(post_id: int, created_at: datetime) -> str:
    """A post's Bluesky record key, from its row alone: a TID of the second the row was made, with the post
    id in the rest — its last six digits as the microseconds, the next ten bits as the clock id. One planning
    batch dates all its posts alike; two of them would need ids 1,024,000,000 apart to share a key (the id
    mod 1024 as the clock id repeated after 1,024). Sorted by creation: by the second, then by id."""
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)  # the database hands back naive UTC
    second = created_at.replace(microsecond=0)
    return tid(second + timedelta(microseconds=post_id % 1_000_000), post_id // 1_000_000)


def describe(rules: Network) -> str:
    """'limit 500, URLs 23': the rules as `verify` reports them."""
    return f"limit {rules.limit}" + (f", URLs {rules.url_cost}" if rules.url_cost is not None else "")


def may_have_arrived(e: BaseException | None) -> bool:
    """Whether a request that failed may still have reached the network: anything but failing to connect.
    When in doubt, yes — it only changes how a later "duplicate" refusal is read."""
    if isinstance(e, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError,
                      requests.exceptions.ProxyError, httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return False
    if isinstance(e, requests.ConnectionError) and e.args and isinstance(e.args[0], MaxRetryError):
        return not isinstance(e.args[0].reason, NewConnectionError)  # refused, or no such host
    return True
