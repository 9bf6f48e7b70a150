"""Bluesky through atproto: a record key made from the post's row (a retry can't make a second record),
facets and a link card (its picture the page's, else the story's), the session kept between posts; a post taken
back with `deleteRecord`."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from syndicate.errors import AccountProblem, TransportError
from syndicate.social.clients.base import (
    TIMEOUT,
    PostRequest,
    Published,
    Retracted,
    RetractRequest,
    describe,
    may_have_arrived,
)
from syndicate.social.networks import BLUESKY, Network

if TYPE_CHECKING:
    from syndicate.social.images import Picture

log = logging.getLogger(__name__)

BLUESKY_SERVICE = "https://bsky.social"


BLUESKY_THUMB_MAX = 1_000_000  # bytes: app.bsky.embed.external's thumb limit; a larger image goes unsent


def bluesky_picture(request: PostRequest) -> tuple[bytes, str | None] | None:
    """The picture a post uploads, and its type: the link card's own (the page's og:image) when it fits,
    else the story's picture, fitted to Bluesky at planning (its image_url, alt and caption); None: none.

    A teaser is there to send readers to the story, so a post with a card keeps the card (app.bsky.embed.external,
    the whole card a link) with the picture as its thumbnail; a card has no alt text of its own — its title
    says what it links to. Only a post whose page gave no card shows the story's picture as an image embed
    (app.bsky.embed.images), with its alt text."""
    card = request.card
    if card is not None and card.image:
        if len(card.image) <= BLUESKY_THUMB_MAX:
            return card.image, card.image_type
        log.info("bluesky: %s's image is %d bytes, over %d: the card takes the story's picture, if any",
                 card.url, len(card.image), BLUESKY_THUMB_MAX)
    if request.image is not None:
        return request.image.data, request.image.mime
    return None


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
                 timeout: float = TIMEOUT, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        from atproto_client import Client
        from atproto_client.request import Request

        self.handle, self.service, self.language = handle, service, language
        self.on_session, self.clock = on_session, clock  # the clock dates each record (createdAt)
        self._password, self._saved_session = app_password, session
        self._did: str | None = None
        self._started = False
        self.api = Client(base_url=service, request=Request(timeout=timeout))
        self.api.on_session_change(self._session_changed)

    def publish(self, request: PostRequest) -> Published:
        from atproto_client.exceptions import AtProtocolError

        try:
            self._start()
            blob, note = self._blob(request)
        except (AtProtocolError, httpx.HTTPError) as e:
            raise self._error(e, writing=False) from e
        data = bluesky_create_record(self._did, request, self.language, blob, self.clock())
        try:
            uri = self._create(data)
        except (AtProtocolError, httpx.HTTPError) as e:
            raise self._error(e, writing=True) from e
        return Published(uri, f"https://bsky.app/profile/{self.handle}/post/{data.rkey}", image_error=note)

    def retract(self, request: RetractRequest) -> Retracted:
        """`com.atproto.repo.deleteRecord` of the record the post's at:// URI names. The reference PDS answers
        a record it doesn't have with 200 (nothing to delete), others with 400 RecordNotFound: both are done."""
        from atproto_client.exceptions import AtProtocolError, BadRequestError, ModelError

        try:
            self._start()
            data = bluesky_delete_record(self._did, request)
            self._xrpc(lambda: self.api.com.atproto.repo.delete_record(data))
        except ModelError:
            return Retracted()  # a 2xx whose body atproto couldn't read (an empty one): deleted all the same
        except BadRequestError as e:
            name, message = xrpc_error(e)
            if name == "RecordNotFound" or "could not locate record" in message.lower():
                return Retracted(gone_already=True)
            raise self._error(e, writing=False, refused="Bluesky refused to delete the post") from e
        except (AtProtocolError, httpx.HTTPError) as e:
            raise self._error(e, writing=False, refused="Bluesky refused to delete the post") from e
        return Retracted()

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

    def _blob(self, request: PostRequest):
        """The post's picture (`bluesky_picture`) as an uploaded blob, and why not when it couldn't be: a
        picture that fails leaves the post to go without it, unless the PDS refuses the account itself."""
        from atproto_client.exceptions import AtProtocolError

        picked = bluesky_picture(request)
        if picked is None:
            return None, None
        data, mime = picked
        headers = {"Content-Type": mime} if mime else {}
        try:
            return self._xrpc(lambda: self.api.com.atproto.repo.upload_blob(data, headers=headers)).blob, None
        except (AtProtocolError, httpx.HTTPError) as e:
            response = getattr(e, "response", None)
            if response is not None and response.status_code in (401, 403):  # every post would fail the same way
                raise
            said = f"{response.status_code} {': '.join(xrpc_error(e))}" if response is not None else repr(e)
            log.warning("bluesky: the picture of post %d could not be uploaded (%s): it goes without", request.post_id,
                        said)
            return None, f"Bluesky refused the picture ({said}); the post went without it"

    def _create(self, data) -> str:
        """Write the record; its AT URI. A refusal with this post's record already in place is a success;
        with another record under its key, a failure that says so."""
        from atproto_client.exceptions import AtProtocolError

        try:
            return self._xrpc(lambda: self.api.com.atproto.repo.create_record(data)).uri
        except AtProtocolError as e:
            found = self._already_there(e, data.rkey)
            if found is None:
                raise
            if not same_post(found, data.record):
                raise TransportError(
                    f"Bluesky already has another post under this post's record key {data.rkey} "
                    f"(https://bsky.app/profile/{self.handle}/post/{data.rkey}); this one was not posted. "
                    "Re-share the story to post it under a key of its own", permanent=True,
                    code=e.response.status_code) from e
        log.info("bluesky: record %s was there already: an earlier attempt got through", data.rkey)
        return f"at://{self._did}/{data.collection}/{data.rkey}"

    def _already_there(self, e, rkey: str) -> dict | None:
        """After a refused create: the record under our key, if there is one (an earlier attempt that had no
        answer, or — the caller tells — another post). The reference PDS answers an existing rkey with a bare
        500 InternalServerError (atproto#3718); a newer one may say 409/400 RecordAlreadyExists — so look,
        rather than read the refusal."""
        from atproto_client import models
        from atproto_client.exceptions import AtProtocolError
        from atproto_client.models.dot_dict import DotDict
        from atproto_client.models.utils import get_model_as_dict

        if getattr(e, "response", None) is None or e.response.status_code in (401, 403, 429):
            return None
        params = models.ComAtprotoRepoGetRecord.Params(repo=self._did, collection="app.bsky.feed.post", rkey=rkey)
        try:
            value = self._xrpc(lambda: self.api.com.atproto.repo.get_record(params)).value
        except AtProtocolError:
            return None  # not there (400 RecordNotFound), or can't tell now: the original error stands
        return value.to_dict() if isinstance(value, DotDict) else get_model_as_dict(value)

    def _error(self, e: Exception, writing: bool, refused: str = "Bluesky refused the post") -> TransportError:
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
        return TransportError(f"{refused} {said}", permanent=True, code=status)


ACCOUNT_GONE = frozenset({"AccountTakedown", "AccountDeactivated", "AccountSuspended"})


def same_post(found: dict, record) -> bool:
    """Whether the record found under a post's key is that post: the same text, or a link to the same address
    (an editor may have changed the text between two attempts; the link stays). Not createdAt: each attempt
    dates its record by the clock."""
    from atproto_client.models.utils import get_model_as_dict

    ours = get_model_as_dict(record)
    return found.get("text") == ours.get("text") or bool(_links(found) & _links(ours))


def _links(record: dict) -> set[str]:
    """The addresses a post record links to: its link facets and its card."""
    found = {((record.get("embed") or {}).get("external") or {}).get("uri")}
    for facet in record.get("facets") or ():
        found |= {feature.get("uri") for feature in facet.get("features") or ()}
    return found - {None}


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


def bluesky_create_record(repo: str, request: PostRequest, language: str | None, blob, now: datetime):
    """The `com.atproto.repo.createRecord` input for a teaser: the live client sends it, the dry run writes it.
    `blob`: the uploaded `bluesky_picture`, the card's thumbnail — or, without a card, an image embed."""
    from atproto_client import models

    teaser, card, language = request.teaser, request.card, request.language_or(language)
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
    if card is not None:  # the card opens what the teaser links to: the story's link, with the account's UTM
        embed = models.AppBskyEmbedExternal.Main(external=models.AppBskyEmbedExternal.External(
            uri=teaser.url, title=card.title, description=card.description, thumb=blob))
    elif blob is not None and request.image is not None:
        embed = _image_embed(request.image, blob)
    record = models.AppBskyFeedPost.Record(
        text=teaser.text,
        created_at=now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        facets=facets or None,
        embed=embed,
        langs=[language] if language else None,
    )
    return models.ComAtprotoRepoCreateRecord.Data(repo=repo, collection="app.bsky.feed.post", rkey=request.rkey,
                                                  record=record)


_RKEY = re.compile(r"[A-Za-z0-9._:~-]{1,512}")  # atproto's record key syntax


def bluesky_delete_record(repo: str, request: RetractRequest):
    """The `com.atproto.repo.deleteRecord` input for a post: always a post (app.bsky.feed.post) of the account's
    own repo, under the key its at:// URI names (what `publish` recorded), else the key it was written under.
    Nothing stored can make it delete another kind of record (the profile, a follow) or another repo's."""
    from atproto_client import models

    rkey = request.rkey
    named = request.remote_id.removeprefix("at://").split("/") if request.remote_id.startswith("at://") else []
    ours = bool(named) and (named[0] == repo or not repo.startswith("did:"))  # a dry run knows the handle only
    if len(named) == 3 and ours and named[1] == "app.bsky.feed.post" and _RKEY.fullmatch(named[2]):
        repo, rkey = named[0], named[2]
    return models.ComAtprotoRepoDeleteRecord.Data(repo=repo, collection="app.bsky.feed.post", rkey=rkey)
def _image_embed(picture: Picture, blob):
    from atproto_client import models

    return models.AppBskyEmbedImages.Main(images=[models.AppBskyEmbedImages.Image(
        alt=picture.alt, image=blob,
        aspect_ratio=models.AppBskyEmbedDefs.AspectRatio(width=picture.width, height=picture.height))])


def blob_cid(data: bytes) -> str:
    """The CID a PDS gives an uploaded blob (CIDv1, raw, sha-256, base32): the dry run's exact thumb."""
    return "b" + base64.b32encode(bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()).decode() \
        .lower().rstrip("=")
