"""A story's picture on a post: fetched through the ingest guard, checked against a network's limits (type,
bytes, pixels), made smaller with Pillow when it is too big — or left out, with the reason in words.

Every failure here is a `LeftOut` that says why: a picture never holds up a post, which goes without it.
A picture that fits goes as the site made it; one made smaller is re-encoded (longest side 2,000 px and
down, JPEG quality stepping down; PNG, then lossy WebP, for one with transparency) and carries none of the
original's metadata (EXIF and the like: a camera's serial number, where the photo was taken). An animation
is never re-encoded: within the limit it goes as it is, over it it is left out.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import datetime

import httpx

from syndicate.errors import FeedError, SyndicateError
from syndicate.ingest import fetch
from syndicate.links import NotAWebLink, web_link
from syndicate.social.linkcard import IMAGE_ACCEPT, IMAGE_TYPES, content_type, image_type

SOURCE_MAX_BYTES = 20_000_000  # the largest picture fetched at all: beyond a web picture, and held in memory
SOURCE_MAX_PIXELS = 50_000_000  # a JPEG (decoded at 1/8 size when smaller is wanted): 8,660 × 5,773
DECODED_MAX_PIXELS = 25_000_000  # a PNG, GIF or WebP, decoded whole (100 MB as RGBA); more is a print file or a bomb
SIDES = (2000, 1600, 1280, 1024, 800)  # the longest side, tried in turn, when a picture must be smaller
QUALITIES = (85, 75, 65, 55)  # JPEG and WebP quality, tried in turn at each size
FETCH_DEADLINE = 10.0  # seconds for the whole picture
MIB = 1024 * 1024
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}


class LeftOut(SyndicateError):
    """The picture can't go on this post; the message says why. The post goes without it."""


@dataclass(frozen=True)
class Limits:
    """What one network (or Mastodon instance) takes as a post's picture."""

    name: str  # as an editor reads it: "X", "Bluesky", "Mastodon (mastodon.social)"
    max_bytes: int
    max_pixels: int | None = None  # width × height
    no_animations: str | None = None  # why an animation can't go at all; None: one within max_bytes goes as it is
    types: frozenset[str] | None = None  # the types it takes as they are (None: JPEG, PNG, GIF and WebP)


# X's one-request upload takes JPEG, PNG and WebP (a GIF is re-encoded; an animated one needs the chunked upload).
X_LIMITS = Limits("X", 5 * MIB, no_animations="X takes an animated GIF only through its chunked upload, which "
                                              "syndicate doesn't make",
                  types=frozenset({"image/jpeg", "image/png", "image/webp"}))
BLUESKY_LIMITS = Limits("Bluesky", 1_000_000)  # an image blob, as app.bsky.embed.images and the card thumb take it
# Mastodon's defaults (configuration.media_attachments of /api/v2/instance): 16 MB, 33,177,600 pixels (8K).
MASTODON_MAX_BYTES, MASTODON_MAX_PIXELS = 16 * MIB, 33_177_600


def limits_for(network: str, max_image_bytes: int | None = None, max_image_pixels: int | None = None,
               instance: str | None = None) -> Limits:
    """A network's limits; for Mastodon the instance's own (read by `syndicate account test`), else its defaults."""
    if network == "x":
        return X_LIMITS
    if network == "bluesky":
        return BLUESKY_LIMITS
    name = f"Mastodon ({instance.split('://')[-1].rstrip('/')})" if instance else "Mastodon"
    return Limits(name, max_image_bytes or MASTODON_MAX_BYTES, max_image_pixels or MASTODON_MAX_PIXELS)


@dataclass(frozen=True)
class Picture:
    """A picture as it will be uploaded, with its alt text and where it came from."""

    data: bytes
    mime: str  # what the bytes are: image/jpeg, image/png, image/gif or image/webp
    width: int
    height: int
    alt: str = ""
    source: str = ""  # the address it was fetched from
    resized: str | None = None  # how it was made smaller, when it was

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.mime]

    def describe(self) -> dict:
        """The picture without its bytes: for the post's record and the dry run."""
        return {"url": self.source, "alt": self.alt, "type": self.mime, "bytes": len(self.data),
                "width": self.width, "height": self.height, "sha256": self.sha256, "resized": self.resized}


# ── fetching ─────────────────────────────────────────────────────────────────


def fetch_source(http: httpx.Client, url: str, *, referer: str, deadline: float, now: datetime) -> bytes:
    """The picture's bytes, through the ingest guard (no address inside our network, a deadline, a size cap)."""
    headers = {"Accept": IMAGE_ACCEPT}
    try:
        headers["Referer"] = web_link(referer)  # image CDNs that refuse hotlinking accept their own site's pages
    except NotAWebLink:
        pass
    try:
        answer = fetch.guarded_get(http, url, headers=headers, deadline=deadline, max_bytes=SOURCE_MAX_BYTES, now=now)
    except FeedError as e:
        raise LeftOut(f"the picture ({url}) could not be fetched: {e}") from e
    if answer.status != 200:
        raise LeftOut(f"the picture ({url}) could not be fetched: it answered {answer.status}")
    declared, _ = content_type(answer.headers.get("content-type", "") if answer.headers else "")
    if declared and not declared.startswith(IMAGE_TYPES):  # a login or error page: the bytes decide the rest
        raise LeftOut(f"the picture's address ({url}) answers {declared}, not a picture")
    return answer.body


# ── fitting ──────────────────────────────────────────────────────────────────


def fit(data: bytes, limits: Limits, *, alt: str = "", source: str = "") -> Picture:
    """The picture as `limits` takes it: as it is when it fits, else smaller; LeftOut says why it can't go."""
    from PIL import Image

    mime = image_type(data)
    if mime is None:
        raise LeftOut("it is not a JPEG, PNG, GIF or WebP picture")
    try:
        # reads the header: nothing is decoded yet; only the four formats a network takes are tried
        with Image.open(io.BytesIO(data), formats=("JPEG", "PNG", "GIF", "WEBP")) as image:
            width, height = image.size
            most = SOURCE_MAX_PIXELS if image.format == "JPEG" else DECODED_MAX_PIXELS
            if width * height > most:
                raise LeftOut(f"it is {width:,}×{height:,} pixels, more than a post's picture is read at ({most:,})")
            fits = (len(data) <= limits.max_bytes and (limits.types is None or mime in limits.types)
                    and (limits.max_pixels is None or width * height <= limits.max_pixels))
            if getattr(image, "is_animated", False):
                if limits.no_animations:
                    raise LeftOut(f"it is an animation: {limits.no_animations}")
                if not fits:
                    raise LeftOut(f"it is an animation of {_over(data, width, height, limits)}; animations are "
                                  "never re-encoded")
            if fits:
                return Picture(data, mime, width, height, alt=alt, source=source)
            return _smaller(image, data, limits, alt=alt, source=source)
    except LeftOut:
        raise
    except Image.DecompressionBombError as e:
        raise LeftOut(f"it would decode to more pixels than a post's picture is read at ({e})") from e
    except Exception as e:  # Pillow's decoders raise many kinds on broken or hostile bytes
        raise LeftOut(f"it could not be read as a picture ({type(e).__name__}: {e})") from e


def _smaller(image, data: bytes, limits: Limits, *, alt: str, source: str) -> Picture:
    from PIL import Image, ImageOps

    width, height = image.size
    was = f"{width:,}×{height:,} {image.format} of {len(data):,} bytes"
    if image.format == "JPEG":
        image.draft("RGB", (SIDES[0], SIDES[0]))  # decode at 1/2, 1/4 or 1/8 size: far less memory and time
    # Down to the largest size tried before anything else is done to it: the full-size picture is decoded
    # once and never copied (rotating and converting a 50-megapixel one took a gigabyte).
    image.thumbnail((SIDES[0], SIDES[0]), Image.Resampling.LANCZOS)
    image = ImageOps.exif_transpose(image)  # the camera's rotation, applied: its EXIF tag goes with the rest
    alpha = image.has_transparency_data
    frame = image.convert("RGBA" if alpha else "RGB")
    frame.info = {k: v for k, v in frame.info.items() if k == "icc_profile"}  # colours kept; nothing else carried
    for side in SIDES:
        scaled = frame.copy()
        scaled.thumbnail((side, side), Image.Resampling.LANCZOS)  # keeps the proportions; never enlarges
        if limits.max_pixels is not None and scaled.width * scaled.height > limits.max_pixels:
            continue
        for form, options in _encodings(alpha, first=side == SIDES[0]):
            out = io.BytesIO()
            scaled.save(out, form, **options)
            if out.tell() <= limits.max_bytes:
                return Picture(out.getvalue(), MIME[form], scaled.width, scaled.height, alt=alt, source=source,
                               resized=f"re-encoded for {limits.name}: {was} → {scaled.width:,}×{scaled.height:,} "
                                       f"{form} of {out.tell():,} bytes")
            if form != "PNG" and out.tell() > 2 * limits.max_bytes:
                break  # a lower quality won't halve it: a smaller size next
    raise LeftOut(f"it is {_over(data, width, height, limits)}, and still too big at {SIDES[-1]} pixels")


def _encodings(alpha: bool, first: bool):
    """What a smaller picture is saved as, best first: PNG (at the first size only: a drawing fits as PNG or not
    at all, a photo never does), then lossy WebP keep transparency; the rest is JPEG. (PNG's `optimize` costs
    ten times the time for a tenth off: not worth it.)"""
    if alpha:
        if first:
            yield "PNG", {}
        for quality in QUALITIES:
            yield "WEBP", {"quality": quality, "method": 4}
    else:
        for quality in QUALITIES:
            yield "JPEG", {"quality": quality, "optimize": True, "progressive": True}


def _over(data: bytes, width: int, height: int, limits: Limits) -> str:
    """"6,512,334 bytes, over X's limit of 5,242,880 bytes" — or the pixels, when those are over."""
    if limits.max_pixels is not None and width * height > limits.max_pixels:
        return (f"{width:,}×{height:,} pixels, over {limits.name}'s limit of {limits.max_pixels:,} pixels")
    return f"{len(data):,} bytes, over {limits.name}'s limit of {limits.max_bytes:,} bytes"
