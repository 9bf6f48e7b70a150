"""Social network clients behind one small Protocol: a teaser goes in, where it landed comes out.

One client per network, each on the network's own library — tweepy for X, Mastodon.py, atproto for
Bluesky — built from plain values, plus a dry-run client that writes the exact request to a folder.
Every failure leaves as a TransportError that says whether to try again (`permanent`), when
(`retry_at`) and whether the post may be out there already (`uncertain`); or as an AccountProblem
when the network refuses the account itself, so every post would fail the same way.

Mastodon.py and atproto are imported when a client for them is made: atproto alone takes a second
to import, and most processes (the CLI, the mail workers) never post to Bluesky.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import httpx
import requests
import tweepy
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError

from syndicate import private_files
from syndicate.errors import AccountProblem, DuplicatePost, TransportError
from syndicate.social.teaser import BLUESKY, MASTODON, Network, X

if TYPE_CHECKING:
    from syndicate.social.linkcard import Card
    from syndicate.social.teaser import Teaser

log = logging.getLogger(__name__)

TIMEOUT = 20.0  # seconds, every request: a stuck network must not hold a worker
X_ENDPOINT = "https://api.twitter.com/2/tweets"
BLUESKY_SERVICE = "https://bsky.social"
BLUESKY_THUMB_MAX = 1_000_000  # bytes: app.bsky.embed.external's thumb limit; a larger image goes unsent
TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"  # atproto's sortable base32


# ── the interface ────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Published:
    remote_id: str | None  # None: known to be posted, but not under which id
    remote_url: str | None
    limit_reset: datetime | None = None  # this post used up a limit the network announced: nothing more until then


@dataclass(frozen=True)
class PostRequest:
    teaser: Teaser
    card: Card | None
    post_id: int  # the ledger row: unique per (article, account[, re-share])
    created_at: datetime  # the row's creation time (UTC); with post_id, what makes every retry look the same

    @property
    def key(self) -> str:
        """The idempotency key: the same on every attempt, so Mastodon answers a retry with the first post."""
        return f"syndicate-post-{self.post_id}"

    @property
    def rkey(self) -> str:
        """The Bluesky record key: the same on every attempt, so a retry can't make a second post."""
        return tid(self.created_at, self.post_id % 1024)


class SocialClient(Protocol):
    network: str
    dry_run: bool

    def publish(self, request: PostRequest) -> Published:
        """Post the teaser (and its link card where the network needs us to build it)."""

    def verify(self) -> str:
        """A harmless authenticated read: who we post as, and where; AccountProblem says what to fix."""

    def rules(self) -> Network:
        """The length rules this account's teasers must fit."""


def tid(at: datetime, clock_id: int) -> str:
    """atproto's timestamp id: 53 bits of microseconds since the epoch, then a 10-bit clock id, in 13
    sortable base32 characters. Built from the ledger row, not the clock, so it is the same on every try."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # the database hands back naive UTC
    micros = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    number = (micros << 10) | (clock_id & 0x3FF)
    return "".join(TID_ALPHABET[(number >> shift) & 31] for shift in range(60, -1, -5))


def describe(rules: Network) -> str:
    """'limit 500, URLs 23': the rules as `verify` reports them."""
    return f"limit {rules.limit}" + (f", URLs {rules.url_cost}" if rules.url_cost is not None else "")


# ── X ────────────────────────────────────────────────────────────────────────


class _TimeoutAdapter(HTTPAdapter):
    """tweepy sets no timeout of its own; a stuck request must not hold a worker forever."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def send(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)


class XClient:
    """X through tweepy: API v2 `POST /2/tweets`. X draws the link card from the page itself; a post
    with media would hide it, so nothing is ever uploaded."""

    network = "x"
    dry_run = False

    def __init__(self, consumer_key: str, consumer_secret: str, access_token: str, access_token_secret: str, *,
                 bearer_token: str | None = None, timeout: float = TIMEOUT):
        self.oauth2 = bearer_token is not None  # an OAuth 2.0 user-context token replaces OAuth 1.0a
        self.api = tweepy.Client(
            bearer_token=bearer_token,
            consumer_key=consumer_key,
            consumer_secret=consumer_secret,
            access_token=access_token,
            access_token_secret=access_token_secret,
            return_type=requests.Response,  # the headers say when a limit runs out
            wait_on_rate_limit=False,  # never sleep inside a worker
        )
        adapter = _TimeoutAdapter(timeout)
        self.api.session.mount("https://", adapter)
        self.api.session.mount("http://", adapter)

    def publish(self, request: PostRequest) -> Published:
        try:
            response = self.api.create_tweet(text=request.teaser.text, user_auth=not self.oauth2)
        except (tweepy.HTTPException, requests.RequestException) as e:
            raise self._error(e, writing=True) from e
        tweet_id = str(response.json()["data"]["id"])
        return Published(tweet_id, f"https://x.com/i/web/status/{tweet_id}",
                         limit_reset=exhausted_until(response.headers))

    def verify(self) -> str:
        try:
            response = self.api.get_me(user_auth=not self.oauth2)
        except (tweepy.HTTPException, requests.RequestException) as e:
            raise self._error(e, writing=False) from e
        return f"@{response.json()['data']['username']} on X ({describe(X)})"

    def rules(self) -> Network:
        return X

    def _error(self, e: Exception, writing: bool) -> TransportError:
        """What an X failure means for this post and for the account."""
        if isinstance(e, requests.RequestException):
            return TransportError(f"cannot reach X: {e}", permanent=False, uncertain=writing and may_have_arrived(e))
        status, detail = e.response.status_code, _x_detail(e)
        if status == 429:
            reset = rate_limit_reset(e.response.headers)
            when = f"; X says to wait until {reset:%Y-%m-%d %H:%M} UTC" if reset else ""
            return TransportError(f"X rate limit: {detail}{when}", permanent=False, code=429, retry_at=reset)
        if status == 403 and "duplicate" in detail.lower():
            return DuplicatePost(f"X says duplicate content: {detail}")
        if status in (401, 402, 403):
            return AccountProblem(self._account_advice(e, status, detail), code=status)
        if status >= 500:  # a gateway may answer after X took the post
            return TransportError(f"X server error: {detail}", permanent=False, code=status, uncertain=writing)
        return TransportError(f"X refused the post: {detail}", permanent=True, code=status)

    def _account_advice(self, e: tweepy.HTTPException, status: int, detail: str) -> str:
        """What is wrong with the account or the app, and what to do about it, in the developer portal's words."""
        body = _json_body(e.response)
        problem = f"{body.get('type', '')} {body.get('reason', '')} {body.get('title', '')} {detail}".lower()
        said = f"({status}: {detail})"
        if status == 401 and self.oauth2:
            return (f"X rejected the OAuth 2.0 user token {said}: it expired or was revoked; "
                    "issue a new one (with the tweet.write and offline.access scopes) and reconnect the account")
        if status == 401:
            return (f"X rejected the credentials {said}: the access token was revoked or a key is wrong; "
                    "regenerate the access token and secret in the developer portal and reconnect the account")
        if status == 402 or "credits" in problem:
            return (f"X wants payment {said}: the developer account has no credits or plan for posting; "
                    "top it up in the developer portal, then resume the account")
        if "oauth1-permissions" in problem or "permission" in problem:
            return (f"X says the app lacks write permission {said}: set 'Read and write' in the developer portal "
                    "(User authentication settings) and regenerate the access token and secret")
        if "client-not-enrolled" in problem or "project" in problem:
            return (f"X says the app can't use API v2 {said}: attach the app to a Project in the developer "
                    "portal, then resume the account")
        if "suspended" in problem:
            return f"X says the account is suspended {said}: settle it on x.com, then resume the account"
        if "locked" in problem:
            return f"X says the account is locked {said}: log in on x.com to unlock it, then resume the account"
        return (f"X refused the account {said}: check the account on x.com and the app's access level in the "
                "developer portal, then resume the account")


def rate_limit_reset(headers) -> datetime | None:
    """After a 429: the later of the 15-minute window's reset and any exhausted 24-hour limit's reset."""
    resets = []
    if headers.get("x-rate-limit-reset", "").isdigit():
        resets.append(int(headers["x-rate-limit-reset"]))
    for scope in ("user", "app"):
        if headers.get(f"x-{scope}-limit-24hour-remaining") == "0" and \
                headers.get(f"x-{scope}-limit-24hour-reset", "").isdigit():
            resets.append(int(headers[f"x-{scope}-limit-24hour-reset"]))
    return datetime.fromtimestamp(max(resets), UTC) if resets else None


def exhausted_until(headers) -> datetime | None:
    """After a post that went out: when the last limit it used up resets; None while every limit has some left."""
    resets = []
    for prefix in ("x-rate-limit", "x-user-limit-24hour", "x-app-limit-24hour"):
        if headers.get(f"{prefix}-remaining") == "0" and headers.get(f"{prefix}-reset", "").isdigit():
            resets.append(int(headers[f"{prefix}-reset"]))
    return datetime.fromtimestamp(max(resets), UTC) if resets else None


def _x_detail(e: tweepy.HTTPException) -> str:
    return "; ".join(e.api_messages) or f"HTTP {e.response.status_code}"


def _json_body(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def may_have_arrived(e: BaseException | None) -> bool:
    """Whether a request that failed may still have reached the network: anything but failing to connect.
    When in doubt, yes — it only changes how a later "duplicate" refusal is read."""
    if isinstance(e, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError,
                      requests.exceptions.ProxyError, httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return False
    if isinstance(e, requests.ConnectionError) and e.args and isinstance(e.args[0], MaxRetryError):
        return not isinstance(e.args[0].reason, NewConnectionError)  # refused, or no such host
    return True


# ── Mastodon ─────────────────────────────────────────────────────────────────


class MastodonClient:
    """Mastodon through Mastodon.py: `POST /api/v1/statuses` with an Idempotency-Key, so a retry within
    the hour gets the first post back instead of a second one. The instance draws the link card from
    the page; nothing is uploaded."""

    network = "mastodon"
    dry_run = False

    def __init__(self, api_base_url: str, access_token: str, *, visibility: str = "unlisted",
                 language: str | None = None, timeout: float = TIMEOUT):
        from mastodon import Mastodon

        self.visibility, self.language = visibility, language
        self.api = Mastodon(
            access_token=access_token,
            api_base_url=api_base_url,
            ratelimit_method="throw",  # never sleep inside a worker
            version_check_mode="none",  # no version request before every client's first call
            request_timeout=timeout,
        )
        self.host = urlsplit(self.api.api_base_url).netloc
        self._rules: Network | None = None
        self.rules_note: str | None = None  # set when the instance didn't say its limits

    def publish(self, request: PostRequest) -> Published:
        from mastodon import MastodonAPIError, MastodonNetworkError, MastodonRatelimitError

        try:
            status = self.api.status_post(request.teaser.text, visibility=self.visibility, language=self.language,
                                          idempotency_key=request.key)
        except (MastodonAPIError, MastodonNetworkError, MastodonRatelimitError) as e:
            raise self._error(e, writing=True) from e
        return Published(str(status["id"]), status.get("url") or status.get("uri"), limit_reset=self._exhausted_until())

    def verify(self) -> str:
        from mastodon import MastodonAPIError, MastodonNetworkError, MastodonRatelimitError

        try:
            account = self.api.account_verify_credentials()
        except (MastodonAPIError, MastodonNetworkError, MastodonRatelimitError) as e:
            raise self._error(e, writing=False) from e
        rules = self.rules()
        note = f"; {self.rules_note}" if self.rules_note else ""
        return f"@{account['acct']} on {self.host} ({describe(rules)}{note})"

    def rules(self) -> Network:
        """The instance's own limits, read once per client: servers differ (500 is only the default)."""
        if self._rules is None:
            self._rules, self.rules_note = self._read_rules()
        return self._rules

    def _read_rules(self) -> tuple[Network, str | None]:
        from mastodon import MastodonAPIError, MastodonNetworkError, MastodonRatelimitError, MastodonServerError

        for path, read in (("/api/v2/instance", self.api.instance_v2), ("/api/v1/instance", self.api.instance_v1)):
            try:
                instance = read()
            except (MastodonServerError, MastodonNetworkError, MastodonRatelimitError) as e:
                raise self._error(e, writing=False) from e  # down now: don't settle for a guess
            except MastodonAPIError:
                continue  # no such endpoint (older or non-Mastodon server): ask the next one
            statuses = (instance.get("configuration") or {}).get("statuses") or {}
            limit = statuses.get("max_characters") or instance.get("max_toot_chars")  # the latter: Pleroma
            if limit:
                url_cost = statuses.get("characters_reserved_per_url", MASTODON.url_cost)
                note = None if path.startswith("/api/v2") else f"limits read from {path}"
                return Network("mastodon", int(limit), int(url_cost)), note
        return MASTODON, (f"{self.host} doesn't publish its limits; assuming {MASTODON.limit} characters "
                          f"and {MASTODON.url_cost} per URL")

    def _exhausted_until(self) -> datetime | None:
        """Mastodon.py keeps the last answer's X-RateLimit-* (the reset already in our clock)."""
        if self.api.ratelimit_remaining == 0 and self.api.ratelimit_reset:
            return datetime.fromtimestamp(self.api.ratelimit_reset, UTC)
        return None

    def _error(self, e: Exception, writing: bool) -> TransportError:
        """What a Mastodon failure means for this post and for the account."""
        from mastodon import MastodonNetworkError, MastodonRatelimitError

        host = self.host
        if isinstance(e, MastodonRatelimitError):
            # Mastodon.py raises this one without the response; it parsed X-RateLimit-Reset just before.
            reset = datetime.fromtimestamp(self.api.ratelimit_reset, UTC) if self.api.ratelimit_reset else None
            when = f"; it says to wait until {reset:%Y-%m-%d %H:%M} UTC" if reset else ""
            return TransportError(f"{host} rate limit{when}", permanent=False, code=429, retry_at=reset)
        if isinstance(e, MastodonNetworkError):  # it wraps the requests error as its context
            return TransportError(f"cannot reach {host}: {e.__context__ or e}", permanent=False,
                                  uncertain=writing and may_have_arrived(e.__context__))
        if len(e.args) < 4:  # 2xx that wasn't JSON: a login page or proxy in front of the API
            return TransportError(f"{host} answered something other than the Mastodon API: {e.args[0]}",
                                  permanent=False)
        status, message = e.args[1], e.args[3] or e.args[2]
        said = f"({status}: {message})"
        if status == 401:
            return AccountProblem(f"{host} rejected the access token {said}: it was revoked or is wrong; create a "
                                  "new one (Preferences → Development, scope write:statuses) and reconnect the "
                                  "account", code=401)
        if status == 403 and "scope" in str(message).lower():
            return AccountProblem(f"{host} says the access token lacks the write:statuses scope {said}: create a "
                                  "token with it (Preferences → Development) and reconnect the account", code=403)
        if status == 403:
            return AccountProblem(f"{host} refused the account {said}: it may be suspended, disabled or not yet "
                                  f"confirmed; check it on {host}, then resume the account", code=403)
        if status == 404:
            return AccountProblem(f"{host} has no Mastodon API at {self.api.api_base_url} {said}: check the "
                                  "account's instance URL", code=404)
        if status == 422 and "authenticated user" in str(message).lower():
            return AccountProblem(f"{host} says the token belongs to no user {said}: create it while logged in "
                                  "as the account (Preferences → Development) and reconnect", code=422)
        if status >= 500:  # a gateway may answer after the instance took the post; the key makes a retry safe
            return TransportError(f"{host} server error {said}", permanent=False, code=status, uncertain=writing)
        return TransportError(f"{host} refused the post {said}", permanent=True, code=status)


# ── Bluesky ──────────────────────────────────────────────────────────────────


class BlueskyClient:
    """Bluesky through atproto: `com.atproto.repo.createRecord` with facets (the server detects neither
    links nor hashtags) and, with a card, an `app.bsky.embed.external` we build ourselves.

    The session is resumed from the saved string and every new or refreshed one goes to `on_session`:
    logins are limited (30 per 5 minutes, 300 a day), so there is never one per post. The record key is
    derived from the ledger row, so a retry after a timeout is refused instead of posting twice, and a
    refusal with the record in place is a success."""

    network = "bluesky"
    dry_run = False

    def __init__(self, handle: str, app_password: str, *, service: str = BLUESKY_SERVICE, session: str | None = None,
                 on_session: Callable[[str], None] | None = None, language: str | None = None,
                 timeout: float = TIMEOUT):
        from atproto_client import Client
        from atproto_client.request import Request

        self.handle, self.service, self.language = handle, service, language
        self.on_session = on_session
        self._password, self._saved_session = app_password, session
        self._did: str | None = None
        self._started = False
        self.api = Client(base_url=service, request=Request(timeout=timeout))
        self.api.on_session_change(self._session_changed)

    def publish(self, request: PostRequest) -> Published:
        from atproto_client.exceptions import AtProtocolError

        try:
            self._start()
            thumb = self._thumb(request.card)
        except (AtProtocolError, httpx.HTTPError) as e:
            raise self._error(e, writing=False) from e
        data = bluesky_create_record(self._did, request, self.language, thumb, datetime.now(UTC))
        try:
            uri = self._create(data)
        except (AtProtocolError, httpx.HTTPError) as e:
            raise self._error(e, writing=True) from e
        return Published(uri, f"https://bsky.app/profile/{self.handle}/post/{data.rkey}")

    def verify(self) -> str:
        from atproto_client import models
        from atproto_client.exceptions import AtProtocolError

        try:
            self._start()
            params = models.AppBskyActorGetProfile.Params(actor=self._did)
            profile = self._xrpc(lambda: self.api.app.bsky.actor.get_profile(params))
        except (AtProtocolError, httpx.HTTPError) as e:
            raise self._error(e, writing=False) from e
        return f"@{profile.handle} on Bluesky via {urlsplit(self.service).netloc} ({describe(BLUESKY)})"

    def rules(self) -> Network:
        return BLUESKY

    # The session: resumed, renewed, or (only when neither works) a new login.

    def _session_changed(self, event, session) -> None:
        from atproto_client.client.session import SessionEvent

        self._did, self.handle = session.did, session.handle
        if event is not SessionEvent.IMPORT and self.on_session is not None:
            self.on_session(session.export())  # a new or refreshed session: the next client resumes it

    def _start(self) -> None:
        """Resume the saved session, or log in when there is none or it can't be read."""
        from atproto_client.exceptions import AtProtocolError

        if self._started:
            return
        if self._saved_session:
            try:
                self.api.login(session_string=self._saved_session, fetch_bsky_profile=False)
                self.api._should_refresh_session()  # reads the token's expiry: a damaged string means a login
            except (ValueError, AtProtocolError):
                log.warning("bluesky: the saved session for %s can't be read; logging in again", self.handle)
                self._login()
        else:
            self._login()
        self._started = True

    def _login(self) -> None:
        from atproto_client.exceptions import BadRequestError, UnauthorizedError

        try:
            self.api.login(self.handle, self._password, fetch_bsky_profile=False)
        except (BadRequestError, UnauthorizedError) as e:
            name, message = xrpc_error(e)
            if name in ACCOUNT_GONE:
                raise self._error(e, writing=False) from e
            raise AccountProblem(
                f"Bluesky refused the login of {self.handle} ({e.response.status_code} {name}: {message}): create "
                "a new app password (Settings → Privacy and security → App passwords) and reconnect the account",
                code=e.response.status_code) from e

    def _renew(self) -> None:
        """The PDS refused the access token: refresh it, or log in again if the refresh token is spent too.
        (atproto 0.0.73 has no public refresh; these are the calls its own `_invoke` makes.)"""
        from atproto_client.exceptions import BadRequestError, LoginRequiredError, UnauthorizedError

        if not self.api._should_refresh_session():  # expired by its own clock: atproto already tried the refresh
            try:
                self.api._refresh_and_set_session()
                return
            except (BadRequestError, UnauthorizedError, LoginRequiredError):
                pass
        log.info("bluesky: the session of %s can't be refreshed; logging in again", self.handle)
        self._login()

    def _xrpc(self, call):
        """One XRPC call on a live session; if the PDS says the token expired, renew it and try once more."""
        from atproto_client.exceptions import BadRequestError, UnauthorizedError

        self._start()
        try:
            return call()
        except (BadRequestError, UnauthorizedError) as e:
            if not _renewable(e):
                raise
        self._renew()
        return call()

    # The post.

    def _thumb(self, card: Card | None):
        """The card's image as an uploaded blob; None without one, or with one Bluesky won't take."""
        from atproto_client.exceptions import RequestErrorBase

        if card is None or not card.image:
            return None
        if len(card.image) > BLUESKY_THUMB_MAX:
            log.info("bluesky: %s's image is %d bytes, over %d: the card goes without it",
                     card.url, len(card.image), BLUESKY_THUMB_MAX)
            return None
        headers = {"Content-Type": card.image_type} if card.image_type else {}
        try:
            return self._xrpc(lambda: self.api.com.atproto.repo.upload_blob(card.image, headers=headers)).blob
        except RequestErrorBase as e:
            if e.response is not None and e.response.status_code in (400, 413, 415):  # the image: post without it
                log.warning("bluesky: the PDS refused %s's image (%s): the card goes without it", card.url, e)
                return None
            raise

    def _create(self, data) -> str:
        """Write the record; its AT URI. A refusal with our record already in place is a success."""
        from atproto_client.exceptions import AtProtocolError

        try:
            return self._xrpc(lambda: self.api.com.atproto.repo.create_record(data)).uri
        except AtProtocolError as e:
            if not self._already_there(e, data.rkey):
                raise
        log.info("bluesky: record %s was there already: an earlier attempt got through", data.rkey)
        return f"at://{self._did}/{data.collection}/{data.rkey}"

    def _already_there(self, e, rkey: str) -> bool:
        """After a refused create: is our record there already (an earlier attempt that had no answer)?
        The reference PDS answers an existing rkey with a bare 500 InternalServerError (atproto#3718);
        a newer one may say 409/400 RecordAlreadyExists — so look, rather than read the refusal."""
        from atproto_client import models
        from atproto_client.exceptions import AtProtocolError

        if getattr(e, "response", None) is None or e.response.status_code in (401, 403, 429):
            return False
        params = models.ComAtprotoRepoGetRecord.Params(repo=self._did, collection="app.bsky.feed.post", rkey=rkey)
        try:
            self._xrpc(lambda: self.api.com.atproto.repo.get_record(params))
        except AtProtocolError:
            return False  # not there (400 RecordNotFound), or can't tell now: the original error stands
        return True

    def _error(self, e: Exception, writing: bool) -> TransportError:
        """What a Bluesky failure means for this post and for the account."""
        from atproto_client.exceptions import NetworkError, RateLimitExceededError

        if isinstance(e, httpx.HTTPError):  # what atproto passes through unwrapped (e.g. a dropped line)
            return TransportError(f"cannot reach Bluesky ({self.service}): {e!r}", permanent=False,
                                  uncertain=writing and may_have_arrived(e))
        response = getattr(e, "response", None)
        if response is None and isinstance(e, NetworkError):  # a timeout or network failure, httpx's as the cause
            return TransportError(f"cannot reach Bluesky ({self.service}): {e.__cause__ or e!r}", permanent=False,
                                  uncertain=writing and may_have_arrived(e.__cause__))
        if response is None:
            return TransportError(f"unexpected answer from Bluesky ({self.service}): {e!r}", permanent=False)
        status, (name, message) = response.status_code, xrpc_error(e)
        said = f"({status} {name}: {message})"
        if isinstance(e, RateLimitExceededError):
            reset = e.reset_at
            if reset is None and e.retry_after is not None:
                reset = datetime.now(UTC) + timedelta(seconds=e.retry_after)
            when = f"; it says to wait until {reset:%Y-%m-%d %H:%M} UTC" if reset else ""
            return TransportError(f"Bluesky rate limit {said}{when}", permanent=False, code=429, retry_at=reset)
        if name in ACCOUNT_GONE:
            return AccountProblem(f"Bluesky says the account {self.handle} is unavailable {said}: see the email "
                                  "Bluesky sent about it (or bsky.app); resume the account once it's settled",
                                  code=status)
        if status in (401, 403) or name in ("ExpiredToken", "InvalidToken"):
            return AccountProblem(f"Bluesky refused {self.handle}'s session even after renewing it {said}: "
                                  "check the account and its app password, then reconnect it", code=status)
        if status >= 500 or status in (408, 409):
            return TransportError(f"Bluesky server error {said}", permanent=False, code=status, uncertain=writing)
        return TransportError(f"Bluesky refused the post {said}", permanent=True, code=status)


ACCOUNT_GONE = frozenset({"AccountTakedown", "AccountDeactivated", "AccountSuspended"})


def xrpc_error(e) -> tuple[str, str]:
    """(error, message) of an XRPC refusal, e.g. ("ExpiredToken", "Token has expired")."""
    content = e.response.content
    name, message = getattr(content, "error", None), getattr(content, "message", None)
    if name is None and isinstance(content, dict):
        name, message = content.get("error"), content.get("message")
    return str(name or f"HTTP {e.response.status_code}"), str(message or "")


def _renewable(e) -> bool:
    """The PDS refuses the access token itself, which a refresh or a new login can fix."""
    name, _ = xrpc_error(e)
    return name not in ACCOUNT_GONE and (name in ("ExpiredToken", "InvalidToken") or e.response.status_code == 401)


def bluesky_create_record(repo: str, request: PostRequest, language: str | None, thumb, now: datetime):
    """The `com.atproto.repo.createRecord` input for a teaser: the live client sends it, the dry run writes it."""
    from atproto_client import models

    teaser, card = request.teaser, request.card
    facets = []
    for facet in teaser.facets:
        if facet.kind == "link":
            feature = models.AppBskyRichtextFacet.Link(uri=facet.value)
        elif facet.kind == "tag":
            feature = models.AppBskyRichtextFacet.Tag(tag=facet.value)
        else:
            raise ValueError(f"unknown facet kind {facet.kind!r}")
        facets.append(models.AppBskyRichtextFacet.Main(
            features=[feature],
            index=models.AppBskyRichtextFacet.ByteSlice(byte_start=facet.start, byte_end=facet.end)))
    embed = None
    if card is not None:
        embed = models.AppBskyEmbedExternal.Main(external=models.AppBskyEmbedExternal.External(
            uri=card.url, title=card.title, description=card.description, thumb=thumb))
    record = models.AppBskyFeedPost.Record(
        text=teaser.text,
        created_at=now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        facets=facets or None,
        embed=embed,
        langs=[language] if language else None,
    )
    return models.ComAtprotoRepoCreateRecord.Data(repo=repo, collection="app.bsky.feed.post", rkey=request.rkey,
                                                  record=record)


def blob_cid(data: bytes) -> str:
    """The CID a PDS gives an uploaded blob (CIDv1, raw, sha-256, base32): the dry run's exact thumb."""
    return "b" + base64.b32encode(bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()).decode() \
        .lower().rstrip("=")


# ── dry run ──────────────────────────────────────────────────────────────────


class DryRunClient:
    """Writes the exact request(s) the network would get to `folder/<key>.json` — method, URL, body and
    the headers that matter, never a secret — and calls nothing."""

    dry_run = True

    def __init__(self, network: str, account_name: str, folder: Path, rules: Network, *,
                 instance: str | None = None, handle: str | None = None, service: str = BLUESKY_SERVICE,
                 visibility: str = "unlisted", language: str | None = None):
        self.network, self.account_name, self.folder, self._rules = network, account_name, folder, rules
        if instance and "://" not in instance:
            instance = f"https://{instance}"  # as Mastodon.py reads a bare host name
        self.instance = instance.rstrip("/") if instance else "<instance>"
        self.handle, self.service = handle or "<handle>", service.rstrip("/")
        self.visibility, self.language = visibility, language

    def publish(self, request: PostRequest) -> Published:
        payload = {"account": self.account_name, "network": self.network, "key": request.key,
                   **self.requests_for(request)}
        path = self.folder / f"{request.key}.json"
        private_files.write(path, (json.dumps(payload, ensure_ascii=False, indent=2) + "\n").encode())
        return Published(f"dry-run:{request.key}", path.as_uri())

    def requests_for(self, request: PostRequest) -> dict:
        """{"request": the post} — and for Bluesky with a card image, {"upload": the blob} before it."""
        text = request.teaser.text
        if self.network == "x":
            return {"request": {"method": "POST", "url": X_ENDPOINT, "json": {"text": text}}}
        if self.network == "mastodon":
            form = {"status": text, "sensitive": "0", "visibility": self.visibility}  # as Mastodon.py sends it
            if self.language:
                form["language"] = self.language
            return {"request": {"method": "POST", "url": f"{self.instance}/api/v1/statuses",
                                "headers": {"Idempotency-Key": request.key}, "form": form}}
        if self.network == "bluesky":
            return self._bluesky(request)
        raise ValueError(f"unknown network {self.network!r}")

    def _bluesky(self, request: PostRequest) -> dict:
        from atproto_client.models.blob_ref import BlobRef
        from atproto_client.models.utils import get_model_as_dict

        card, thumb, out = request.card, None, {}
        if card is not None and card.image and len(card.image) <= BLUESKY_THUMB_MAX:
            out["upload"] = {"method": "POST", "url": f"{self.service}/xrpc/com.atproto.repo.uploadBlob",
                             "headers": {"Content-Type": card.image_type or "*/*"}, "bytes": len(card.image)}
            thumb = BlobRef(mime_type=card.image_type or "application/octet-stream", size=len(card.image),
                            ref={"$link": blob_cid(card.image)})
        data = bluesky_create_record(self.handle, request, self.language, thumb, datetime.now(UTC))
        out["request"] = {"method": "POST", "url": f"{self.service}/xrpc/com.atproto.repo.createRecord",
                          "json": get_model_as_dict(data)}
        return out

    def verify(self) -> str:
        return (f"{self.account_name} on {self.network} is a dry run: each post is written to {self.folder}, "
                f"never sent ({describe(self._rules)})")

    def rules(self) -> Network:
        return self._rules
