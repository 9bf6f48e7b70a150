"""Social network clients behind one small Protocol: post a text, get back where it landed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import requests
import tweepy
from requests.adapters import HTTPAdapter

from syndicate.config import Settings, XCredentials
from syndicate.errors import DuplicatePost, TransportError
from syndicate.models import SocialAccount

X_TIMEOUT = 20.0
X_ENDPOINT = "https://api.twitter.com/2/tweets"


@dataclass(frozen=True)
class Published:
    remote_id: str | None  # None: known to be posted, but not under which id
    remote_url: str | None


class SocialClient(Protocol):
    dry_run: bool

    def publish(self, text: str, key: str) -> Published:
        """Post `text`; `key` is unique per (article, account), for networks that deduplicate by it."""


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
    dry_run = False

    def __init__(self, credentials: XCredentials, timeout: float = X_TIMEOUT):
        self.client = tweepy.Client(
            consumer_key=credentials.consumer_key,
            consumer_secret=credentials.consumer_secret,
            access_token=credentials.access_token,
            access_token_secret=credentials.access_token_secret,
            wait_on_rate_limit=False,  # never sleep inside a worker
        )
        adapter = _TimeoutAdapter(timeout)
        self.client.session.mount("https://", adapter)
        self.client.session.mount("http://", adapter)

    def publish(self, text: str, key: str) -> Published:
        try:
            response = self.client.create_tweet(text=text, user_auth=True)
        except tweepy.TooManyRequests as e:
            reset = rate_limit_reset(e.response.headers)
            when = f"; X says to wait until {reset:%H:%M} UTC" if reset else ""
            raise TransportError(f"X rate limit: {_x_detail(e)}{when}", permanent=False, code=429,
                                 retry_at=reset) from e
        except tweepy.Forbidden as e:
            detail = _x_detail(e)
            if "duplicate" in detail.lower():
                raise DuplicatePost(f"X says duplicate content: {detail}") from e
            raise TransportError(f"X refused the post: {detail}", permanent=True, code=403) from e
        except tweepy.Unauthorized as e:
            raise TransportError(
                "X rejected our credentials (401); check the SYNDICATE_X_* settings", permanent=True, code=401
            ) from e
        except tweepy.BadRequest as e:
            raise TransportError(f"X rejected the post: {_x_detail(e)}", permanent=True, code=400) from e
        except tweepy.TwitterServerError as e:
            raise TransportError(f"X server error: {_x_detail(e)}", permanent=False, code=e.response.status_code) from e
        except tweepy.HTTPException as e:
            raise TransportError(f"X error: {_x_detail(e)}", permanent=False, code=e.response.status_code) from e
        except requests.RequestException as e:
            raise TransportError(f"cannot reach X: {e}", permanent=False) from e
        tweet_id = str(response.data["id"])
        return Published(tweet_id, f"https://x.com/i/web/status/{tweet_id}")


def rate_limit_reset(headers) -> datetime | None:
    """The later of the 15-minute window's reset and any exhausted 24-hour limit's reset."""
    resets = []
    if headers.get("x-rate-limit-reset", "").isdigit():
        resets.append(int(headers["x-rate-limit-reset"]))
    for scope in ("user", "app"):
        if headers.get(f"x-{scope}-limit-24hour-remaining") == "0" and \
                headers.get(f"x-{scope}-limit-24hour-reset", "").isdigit():
            resets.append(int(headers[f"x-{scope}-limit-24hour-reset"]))
    return datetime.fromtimestamp(max(resets), UTC) if resets else None


def _x_detail(e: tweepy.HTTPException) -> str:
    return "; ".join(e.api_messages) or f"HTTP {e.response.status_code}"


class DryRunClient:
    """Writes the exact request a network would get to the outbox, and calls nothing."""

    dry_run = True

    def __init__(self, account: SocialAccount, folder: Path):
        self.account, self.folder = account, folder

    def publish(self, text: str, key: str) -> Published:
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "account": self.account.name,
            "network": self.account.network,
            "request": {"method": "POST", "url": X_ENDPOINT, "json": {"text": text}},
        }
        path = self.folder / f"{key}.json"
        path.write_text(json.dumps(payload, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return Published(f"dry-run:{key}", path.as_uri())


def client_for(account: SocialAccount, settings: Settings) -> SocialClient:
    if account.network == "x" and settings.x is not None:
        return XClient(settings.x)
    return DryRunClient(account, settings.outbox / "posts")
