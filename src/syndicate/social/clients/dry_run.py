"""The dry run: the exact request each network would get, written to the outbox, and nothing sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from syndicate import private_files
from syndicate.social.clients import mastodon, x
from syndicate.social.clients.base import PostRequest, Published, Retracted, RetractRequest, describe
from syndicate.social.clients.bluesky import (
    BLUESKY_SERVICE,
    BLUESKY_THUMB_MAX,
    blob_cid,
    bluesky_create_record,
    bluesky_delete_record,
)
from syndicate.social.clients.x import X_ENDPOINT
from syndicate.social.networks import Network


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

    def retract(self, request: RetractRequest) -> Retracted:
        """The deletion the network would get, written to `folder/<key>.retract.json` beside the post's own."""
        payload = {"account": self.account_name, "network": self.network, "key": request.key,
                   "request": self.deletion_for(request)}
        private_files.write(self.folder / f"{request.key}.retract.json",
                            (json.dumps(payload, ensure_ascii=False, indent=2) + "\n").encode())
        return Retracted()

    def deletion_for(self, request: RetractRequest) -> dict:
        """The request that takes the post back, built by the network's own module as its client builds it."""
        if self.network == "x":
            return x.deletion(request)
        if self.network == "mastodon":
            return mastodon.deletion(request, self.instance)
        if self.network == "bluesky":
            from atproto_client.models.utils import get_model_as_dict

            return {"method": "POST", "url": f"{self.service}/xrpc/com.atproto.repo.deleteRecord",
                    "json": get_model_as_dict(bluesky_delete_record(self.handle, request))}
        raise ValueError(f"unknown network {self.network!r}")

    def requests_for(self, request: PostRequest) -> dict:
        """{"request": the post} — and for Bluesky with a card image, {"upload": the blob} before it. Each
        built by the network's own module, as its client builds what it sends."""
        if self.network == "x":
            return {"request": {"method": "POST", "url": X_ENDPOINT, "json": x.tweet(request)}}
        if self.network == "mastodon":
            return {"request": mastodon.status_form(mastodon.status(request, self.visibility, self.language),
                                                    self.instance)}
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
