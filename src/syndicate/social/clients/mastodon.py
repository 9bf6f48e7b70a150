"""Mastodon through Mastodon.py: one idempotency key per post, the instance's own limits; a post taken back
with `DELETE /api/v1/statuses/:id`."""

from __future__ import annotations

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


def status(request: PostRequest, visibility: str, language: str | None) -> dict:
    """Mastodon.py's `status_post` arguments for a post: what MastodonClient sends and the dry run writes
    down (as `status_form`), built once here."""
    language = request.language_or(language)
    return {"status": request.teaser.text, "visibility": visibility,
            "language": language.split("-")[0] if language else None,  # Mastodon takes an ISO 639 code
            "idempotency_key": request.key}


def status_form(arguments: dict, instance: str) -> dict:
    """The request `status_post(**arguments)` makes: Mastodon.py posts the status as a form, with the
    idempotency key as a header, and always says whether it is sensitive."""
    form = {"status": arguments["status"], "sensitive": "0", "visibility": arguments["visibility"]}
    if arguments["language"]:
        form["language"] = arguments["language"]
    return {"method": "POST", "url": f"{instance}/api/v1/statuses",
            "headers": {"Idempotency-Key": arguments["idempotency_key"]}, "form": form}


def deletion(request: RetractRequest, instance: str) -> dict:
    """The request `status_delete(id)` makes (with no body: Mastodon.py leaves out `delete_media` unset)."""
    return {"method": "DELETE", "url": f"{instance}/api/v1/statuses/{request.remote_id}"}


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
            posted = self.api.status_post(**status(request, self.visibility, self.language))
        except (MastodonAPIError, MastodonNetworkError, MastodonRatelimitError) as e:
            raise self._error(e, writing=True) from e
        return Published(str(posted["id"]), posted.get("url") or posted.get("uri"), limit_reset=self._exhausted_until())

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
