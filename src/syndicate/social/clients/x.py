"""X through tweepy: API v2 `POST /2/tweets` and `DELETE /2/tweets/:id`, with X's rate-limit headers read,
each refusal in words; a story's picture uploaded first through v2 `POST /2/media/upload`, which tweepy 4.17
doesn't wrap (its `API.media_upload` is the v1.1 endpoint X removed in 2025)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import requests
import tweepy
from requests.adapters import HTTPAdapter

from syndicate.errors import AccountProblem, DuplicatePost, TransportError
from syndicate.social.clients.base import (
    TIMEOUT,
    PostRequest,
    Published,
    Retracted,
    RetractRequest,
    describe,
    may_have_arrived,
)
from syndicate.social.networks import Network, X
from syndicate.text import shorten

if TYPE_CHECKING:
    from syndicate.social.images import Picture

log = logging.getLogger(__name__)

X_API = "https://api.twitter.com"  # tweepy's host for API v2; api.x.com, where X documents it, answers the same
X_ENDPOINT = f"{X_API}/2/tweets"
X_MEDIA_UPLOAD = f"{X_API}/2/media/upload"
X_MEDIA_METADATA = f"{X_API}/2/media/metadata"
ALT_MAX = 1000  # characters of alt text X takes
UPLOADED = "(the id the upload answers)"  # a media id, in the dry run's record of a post


def tweet(request: PostRequest, media_ids: list[str] | tuple[str, ...] = ()) -> dict:
    """The body of `POST /2/tweets` (X_ENDPOINT) for a post: what XClient hands tweepy's create_tweet and
    what the dry run writes down, built once here."""
    body: dict = {"text": request.teaser.text}
    if media_ids:
        body["media"] = {"media_ids": [str(media_id) for media_id in media_ids]}
    return body


def media_upload(picture: Picture) -> dict:
    """The form fields of `POST /2/media/upload` (X_MEDIA_UPLOAD), sent beside the file as multipart/form-data:
    one request, as a picture under 5 MB may be sent (INIT/APPEND/FINALIZE is for video)."""
    return {"media_category": "tweet_image", "media_type": picture.mime}


def media_metadata(media_id: str, picture: Picture) -> dict | None:
    """The body of `POST /2/media/metadata` (X_MEDIA_METADATA): the picture's alt text; None without one."""
    if not picture.alt:
        return None
    return {"id": str(media_id), "metadata": {"alt_text": {"text": shorten(picture.alt, ALT_MAX)}}}


def deletion(request: RetractRequest) -> dict:
    """`DELETE /2/tweets/:id` for a post: the address tweepy's delete_tweet calls, as the dry run writes it."""
    return {"method": "DELETE", "url": f"{X_ENDPOINT}/{request.remote_id}"}


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
    """X through tweepy: API v2 `POST /2/tweets`. X draws the link card from the page itself; a post with a
    picture shows the picture instead (an account with images off keeps the card).

    The picture is uploaded with tweepy's own session and OAuth 1.0a signature (requests_oauthlib's OAuth1,
    which leaves a multipart body out of the signature, as X expects), its alt text set through
    `POST /2/media/metadata`. A picture that fails in any way leaves the post to go without it; a retry
    uploads it again (an unused media id expires), and X still refuses the same text twice as a duplicate."""

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
        media_ids, note = self._attach(request.image) if request.image is not None else ([], None)
        try:
            try:
                response = self._create(tweet(request, media_ids))
            except tweepy.BadRequest as e:
                if not media_ids:
                    raise
                note = f"X refused the post with its picture ({_x_detail(e)}); it went without the picture"
                response = self._create(tweet(request))
        except (tweepy.HTTPException, requests.RequestException) as e:
            raise self._error(e, writing=True) from e
        tweet_id = str(response.json()["data"]["id"])
        return Published(tweet_id, f"https://x.com/i/web/status/{tweet_id}",
                         limit_reset=exhausted_until(response.headers), image_error=note)

    def _create(self, body: dict) -> requests.Response:
        return self.api.create_tweet(text=body["text"], media_ids=(body.get("media") or {}).get("media_ids"),
                                     user_auth=not self.oauth2)

    def _attach(self, picture: Picture) -> tuple[list[str], str | None]:
        """The picture uploaded, with its alt text: ([media id], None); on any failure ([], why)."""
        try:
            media_id = self._upload(picture)
        except (tweepy.HTTPException, requests.RequestException, ValueError, KeyError, TypeError) as e:
            return [], f"X refused the picture ({_said(e)}); the post went without it"
        metadata = media_metadata(media_id, picture)
        if metadata is not None:
            try:
                self.api.request("POST", "/2/media/metadata", json=metadata, user_auth=not self.oauth2)
            except (tweepy.HTTPException, requests.RequestException) as e:
                return [media_id], f"X didn't take the picture's alt text ({_said(e)}); the picture went without it"
        return [media_id], None

    def _upload(self, picture: Picture) -> str:
        """`POST /2/media/upload` as tweepy's Client makes its own requests (its session, its User-Agent, its
        OAuth1UserHandler), but multipart: Client.request sends only JSON. The media id X answers."""
        headers, auth = {"User-Agent": self.api.user_agent}, None
        if self.oauth2:
            headers["Authorization"] = f"Bearer {self.api.bearer_token}"
        else:
            auth = tweepy.OAuth1UserHandler(self.api.consumer_key, self.api.consumer_secret, self.api.access_token,
                                            self.api.access_token_secret).apply_auth()
        files = {"media": (f"media.{picture.extension}", picture.data, picture.mime)}
        with self.api.session.post(X_MEDIA_UPLOAD, data=media_upload(picture), files=files, headers=headers,
                                   auth=auth) as response:
            if not 200 <= response.status_code < 300:
                raise _http_error(response)
            data = response.json()["data"]
        return str(data["id"])

    def retract(self, request: RetractRequest) -> Retracted:
        """`DELETE /2/tweets/:id`. A tweet X no longer has (404, or "Not Found" among the answer's errors) was
        deleted already; `deleted: false` with nothing said is not taken for a deletion."""
        try:
            response = self.api.delete_tweet(request.remote_id, user_auth=not self.oauth2)
        except tweepy.NotFound:
            return Retracted(gone_already=True)
        except (tweepy.HTTPException, requests.RequestException) as e:
            raise self._error(e, writing=False, refused="X refused to delete the post") from e
        body = _json_body(response)
        if (body.get("data") or {}).get("deleted") is True:
            return Retracted()
        if any("not-found" in str(error.get("type", "")) or "Not Found" in str(error.get("title", ""))
               for error in body.get("errors") or [] if isinstance(error, dict)):
            return Retracted(gone_already=True)
        where = f"https://x.com/i/web/status/{request.remote_id}"
        raise TransportError(f"X answered that it deleted nothing ({str(body)[:200]}): look at {where} and delete "
                             "the post there if it is still up", permanent=True, code=response.status_code)

    def verify(self) -> str:
        try:
            response = self.api.get_me(user_auth=not self.oauth2)
        except (tweepy.HTTPException, requests.RequestException) as e:
            raise self._error(e, writing=False) from e
        return f"@{response.json()['data']['username']} on X ({describe(X)})"

    def rules(self) -> Network:
        return X

    def _error(self, e: Exception, writing: bool, refused: str = "X refused the post") -> TransportError:
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
        return TransportError(f"{refused}: {detail}", permanent=True, code=status)

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


def _said(e: Exception) -> str:
    """What went wrong with a picture, in a few words."""
    if isinstance(e, tweepy.HTTPException):
        return f"{e.response.status_code}: {_x_detail(e)}"
    return f"{type(e).__name__}: {e}"


def _http_error(response: requests.Response) -> tweepy.HTTPException:
    """The exception tweepy's Client raises for this answer."""
    kinds = {400: tweepy.BadRequest, 401: tweepy.Unauthorized, 403: tweepy.Forbidden, 404: tweepy.NotFound,
             429: tweepy.TooManyRequests}
    if response.status_code >= 500:
        return tweepy.TwitterServerError(response)
    return kinds.get(response.status_code, tweepy.HTTPException)(response)


def _json_body(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
