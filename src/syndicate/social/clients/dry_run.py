"""The dry run: the exact request each network would get, written to the outbox, and nothing sent."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from syndicate import private_files
from syndicate.social.clients import mastodon, x
from syndicate.social.clients.base import PostRequest, Published, Retracted, RetractRequest, describe
from syndicate.social.clients.bluesky import (
    BLUESKY_SERVICE,
    blob_cid,
    bluesky_create_record,
    bluesky_delete_record,
    bluesky_picture,
)
from syndicate.social.clients.x import X_ENDPOINT, X_MEDIA_METADATA, X_MEDIA_UPLOAD
from syndicate.social.networks import Network


class DryRunClient:
    """Writes the exact request(s) the network would get to `folder/<key>.json` — method, URL, body and
    the headers that matter, never a secret; a picture's upload by its size, type and sha256, never its
    bytes, and the media id it would answer as x.UPLOADED / mastodon.UPLOADED — and calls nothing."""

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
        """{"request": the post} — with a picture, {"upload": its upload} (and on X {"metadata": its alt
        text}) before it. Each built by the network's own module, as its client builds what it sends."""
        picture = request.image
        if self.network == "x":
            out, media_ids = {}, []
            if picture is not None:
                out["upload"] = {"method": "POST", "url": X_MEDIA_UPLOAD, "form": x.media_upload(picture),
                                 "file": _file(f"media.{picture.extension}", picture.mime, picture.data)}
                metadata = x.media_metadata(x.UPLOADED, picture)
                if metadata is not None:
                    out["metadata"] = {"method": "POST", "url": X_MEDIA_METADATA, "json": metadata}
                media_ids = [x.UPLOADED]
            out["request"] = {"method": "POST", "url": X_ENDPOINT, "json": x.tweet(request, media_ids)}
            return out
        if self.network == "mastodon":
            out, media_ids = {}, ()
            if picture is not None:
                out["upload"] = mastodon.media_form(mastodon.media(request), self.instance)
                media_ids = (mastodon.UPLOADED,)
            out["request"] = mastodon.status_form(
                mastodon.status(request, self.visibility, self.language, media_ids), self.instance)
            return out
        if self.network == "bluesky":
            return self._bluesky(request)
        raise ValueError(f"unknown network {self.network!r}")

    def _bluesky(self, request: PostRequest) -> dict:
        from atproto_client.models.blob_ref import BlobRef
        from atproto_client.models.utils import get_model_as_dict

        blob, out = None, {}
        picked = bluesky_picture(request)
        if picked is not None:
            data, mime = picked
            out["upload"] = {"method": "POST", "url": f"{self.service}/xrpc/com.atproto.repo.uploadBlob",
                             "headers": {"Content-Type": mime or "*/*"}, "bytes": len(data),
                             "sha256": hashlib.sha256(data).hexdigest()}
            blob = BlobRef(mime_type=mime or "application/octet-stream", size=len(data),
                           ref={"$link": blob_cid(data)})
        data = bluesky_create_record(self.handle, request, self.language, blob, datetime.now(UTC))
        out["request"] = {"method": "POST", "url": f"{self.service}/xrpc/com.atproto.repo.createRecord",
                          "json": get_model_as_dict(data)}
        return out

    def verify(self) -> str:
        return (f"{self.account_name} on {self.network} is a dry run: each post is written to {self.folder}, "
                f"never sent ({describe(self._rules)})")

    def rules(self) -> Network:
        return self._rules


def _file(name: str, mime: str, data: bytes) -> dict:
    """A file in a multipart upload, as the dry run writes it: never its bytes."""
    return {"name": name, "type": mime, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
