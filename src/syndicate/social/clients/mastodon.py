"""Mastodon through Mastodon.py: one idempotency key per post, the instance's own limits, a story's picture
uploaded with its description first; a post taken back with `DELETE /api/v1/statuses/:id`."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

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
from syndicate.social.networks import MASTODON, Network
from syndicate.text import shorten

DESCRIPTION_MAX = 1500  # characters of a media description Mastodon takes
MEDIA_WAIT, MEDIA_POLL = 10.0, 2.0  # seconds a picture still processing is waited for, and between two looks
UPLOADED = "(the id the upload answers)"  # a media id, in the dry run's record of a post


def status(request: PostRequest, visibility: str, language: str | None, media_ids: tuple[str, ...] = ()) -> dict:
    """Mastodon.py's `status_post` arguments for a post: what MastodonClient sends and the dry run writes
    down (as `status_form`), built once here."""
    language = request.language_or(language)
    arguments = {"status": request.teaser.text, "visibility": visibility,
                 "language": language.split("-")[0] if language else None,  # Mastodon takes an ISO 639 code
                 "idempotency_key": request.key}
    if media_ids:
        arguments["media_ids"] = list(media_ids)
    return arguments


def status_form(arguments: dict, instance: str) -> dict:
    """The request `status_post(**arguments)` makes: Mastodon.py posts the status as a form, with the
    idempotency key as a header, and always says whether it is sensitive."""
    form: dict = {"status": arguments["status"], "sensitive": "0", "visibility": arguments["visibility"]}
    if arguments["language"]:
        form["language"] = arguments["language"]
    if arguments.get("media_ids"):
        form["media_ids[]"] = list(arguments["media_ids"])
    return {"method": "POST", "url": f"{instance}/api/v1/statuses",
            "headers": {"Idempotency-Key": arguments["idempotency_key"]}, "form": form}


def deletion(request: RetractRequest, instance: str) -> dict:
    """The request `status_delete(id)` makes (with no body: Mastodon.py leaves out `delete_media` unset)."""
    return {"method": "DELETE", "url": f"{instance}/api/v1/statuses/{request.remote_id}"}
def media(request: PostRequest) -> dict:
    """Mastodon.py's `media_post` arguments for a post's picture (`POST /api/v2/media`), named after the post."""
    picture = request.image
    return {"media_file": picture.data, "mime_type": picture.mime,
            "description": shorten(picture.alt, DESCRIPTION_MAX) or None,
            "file_name": f"{request.key}.{picture.extension}"}


def media_form(arguments: dict, instance: str) -> dict:
    """The request `media_post(**arguments)` makes, as multipart/form-data — the file by its size, type and
    sha256, never its bytes."""
    import hashlib

    data = arguments["media_file"]
    form = {"description": arguments["description"]} if arguments["description"] else {}
    return {"method": "POST", "url": f"{instance}/api/v2/media", "form": form,
            "file": {"name": arguments["file_name"], "type": arguments["mime_type"], "bytes": len(data),
                     "sha256": hashlib.sha256(data).hexdigest()}}


class MastodonClient:
    """Mastodon through Mastodon.py: `POST /api/v1/statuses` with an Idempotency-Key, so a retry within
    the hour gets the first post back instead of a second one. The instance draws the link card from
    the page, for a post without a picture.

    A story's picture goes first (`POST /api/v2/media`, its alt text as the description); one the instance
    is still processing (202) is looked at again, for MEDIA_WAIT seconds at most. A picture that fails in
    any way leaves the post to go without it. A retry uploads it again (the instance drops an unused one)
    and gets the first post back by its key, whatever media it names."""

    network = "mastodon"
    dry_run = False

    def __init__(self, api_base_url: str, access_token: str, *, visibility: str = "unlisted",
                 language: str | None = None, timeout: float = TIMEOUT, sleep: Callable[[float], None] = time.sleep):
        from mastodon import Mastodon

        self.visibility, self.language, self.sleep = visibility, language, sleep
        self.api = Mastodon(
            access_token=access_token,
            api_base_url=api_base_url,
            ratelimit_method="throw",  # never sleep inside a worker
            version_check_mode="none",  # no version request before every client's first call
            mastodon_version="3.1.4",  # ... nor before the first upload: see below
            request_timeout=timeout,
        )
        # media_post asks the instance its version to choose /api/v2/media (3.1.4 on) or v1, and when the
        # instance can't say it recurses until the stack runs out (Mastodon.py 2.3.3). Every server since 2020
        # takes v2; with version_check_mode "none" the version given above is not read, so it is set here.
        self.api.mastodon_major, self.api.mastodon_minor, self.api.mastodon_patch = 3, 1, 4
        self.host = urlsplit(self.api.api_base_url).netloc
        self._rules: Network | None = None
        self.rules_note: str | None = None  # set when the instance didn't say its limits
        self.image_limits: dict = {}  # max_image_bytes, max_image_pixels: the instance's, once its rules are read

    def publish(self, request: PostRequest) -> Published:
        from mastodon import MastodonAPIError, MastodonNetworkError, MastodonRatelimitError

        media_ids, note = self._upload(request) if request.image is not None else ((), None)
        try:
            try:
                posted = self.api.status_post(**status(request, self.visibility, self.language, media_ids))
            except MastodonAPIError as e:
                if not (media_ids and len(e.args) >= 4 and e.args[1] == 422):
                    raise
                # The picture is the likeliest cause (still processing, refused): the post goes without it,
                # under the same key (the instance keeps a key only for a post it made).
                note = f"{self.host} refused the post with its picture ({_said(e)}); it went without the picture"
                posted = self.api.status_post(**status(request, self.visibility, self.language))
        except (MastodonAPIError, MastodonNetworkError, MastodonRatelimitError) as e:
            raise self._error(e, writing=True) from e
        return Published(str(posted["id"]), posted.get("url") or posted.get("uri"),
                         limit_reset=self._exhausted_until(), image_error=note)

    def _upload(self, request: PostRequest) -> tuple[tuple[str, ...], str | None]:
        """The picture uploaded and processed: ((media id,), None); on any failure ((), why)."""
        from mastodon import MastodonError

        try:
            attachment = self.api.media_post(**media(request))
            waited = 0.0
            while attachment.get("url") is None:  # 202 Accepted: the instance is still processing it
                if waited >= MEDIA_WAIT:
                    return (), (f"{self.host} was still processing the picture after {MEDIA_WAIT:.0f} s; the post "
                                "went without it")
                self.sleep(MEDIA_POLL)
                waited += MEDIA_POLL
                attachment = self.api.media(attachment["id"])  # 206 while processing, 200 once done
        except (MastodonError, KeyError, TypeError) as e:
            return (), f"{self.host} refused the picture ({_said(e)}); the post went without it"
        return (str(attachment["id"]),), None

    def retract(self, request: RetractRequest) -> Retracted:
        """`DELETE /api/v1/statuses/:id`; a status the instance no longer has (404) was deleted already."""
        from mastodon import MastodonAPIError, MastodonNetworkError, MastodonNotFoundError, MastodonRatelimitError

        try:
            self.api.status_delete(request.remote_id)
        except MastodonNotFoundError:
            return Retracted(gone_already=True)
        except (MastodonAPIError, MastodonNetworkError, MastodonRatelimitError) as e:
            raise self._error(e, writing=False, refused="refused to delete the post") from e
        return Retracted()

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
            attachments = (instance.get("configuration") or {}).get("media_attachments") or {}
            self.image_limits = {"max_image_bytes": _positive(attachments.get("image_size_limit")),
                                 "max_image_pixels": _positive(attachments.get("image_matrix_limit"))}
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

    def _error(self, e: Exception, writing: bool, refused: str = "refused the post") -> TransportError:
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
        return TransportError(f"{host} {refused} {said}", permanent=True, code=status)


def _said(e: Exception) -> str:
    """What Mastodon said of a refusal, in a few words: "422: Validation failed: …"."""
    if len(e.args) >= 4 and isinstance(e.args[1], int):
        return f"{e.args[1]}: {e.args[3] or e.args[2]}"
    return f"{type(e).__name__}: {e}"


def _positive(value) -> int | None:
    """A limit an instance published, or None for one missing or nonsensical."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
