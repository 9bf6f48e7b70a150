"""A story's picture made to fit each network with Pillow, or left out with the reason; fetched from a real
local server through the ingest guard."""

from __future__ import annotations

import io
import struct
import time
import zlib
from datetime import UTC, datetime

import pytest
from PIL import Image

from syndicate.ingest import fetch
from syndicate.social import images
from syndicate.social.images import BLUESKY_LIMITS, X_LIMITS, LeftOut, Limits

T0 = datetime(2030, 1, 6, 7, 0, tzinfo=UTC)


def photo(width: int, height: int) -> Image.Image:
    """Something like a photograph: smooth gradients and grain (noise alone would never compress)."""
    gradient = Image.linear_gradient("L").resize((width, height))
    grain = Image.effect_noise((width, height), 60)
    return Image.merge("RGB", (gradient, grain, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))


def encoded(image: Image.Image, form: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, form, **options)
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def big_jpeg_with_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; shown rotated 90° clockwise
    exif[0x010F] = "SpyCam"  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}  # GPSInfo: where the photographer stood
    return encoded(photo(3000, 2000), "JPEG", quality=95, exif=exif)


# ── as it is, or smaller ─────────────────────────────────────────────────────


def test_a_picture_within_the_limit_goes_as_the_site_made_it():
    data = encoded(photo(800, 600), "JPEG", quality=80)

    picture = images.fit(data, BLUESKY_LIMITS, alt="A field", source="https://cdn.example/f.jpg")

    assert picture.data == data and picture.resized is None
    assert (picture.mime, picture.width, picture.height, picture.alt) == ("image/jpeg", 800, 600, "A field")
    assert picture.describe()["sha256"] == picture.sha256 and "data" not in picture.describe()


def test_a_big_jpeg_is_made_to_fit_upright_and_without_its_metadata():
    data = big_jpeg_with_exif()
    assert len(data) > 5 * 1024 * 1024  # over X's limit too

    for limits in (BLUESKY_LIMITS, X_LIMITS):
        picture = images.fit(data, limits)

        assert len(picture.data) <= limits.max_bytes and picture.mime == "image/jpeg"
        result = opened(picture.data)
        assert result.format == "JPEG" and max(result.size) <= 2000
        assert result.size == (picture.width, picture.height) == (1333, 2000)  # turned as the camera said
        assert not result.getexif() and b"SpyCam" not in picture.data  # no camera, no place, no orientation left
        assert "3,000×2,000 JPEG" in picture.resized and limits.name in picture.resized


def test_a_png_with_transparency_stays_transparent_when_made_smaller():
    image = photo(1200, 1200).convert("RGBA")
    image.putalpha(Image.linear_gradient("L").resize((1200, 1200)))  # from clear at the top to solid
    data = encoded(image, "PNG")
    assert len(data) > BLUESKY_LIMITS.max_bytes

    picture = images.fit(data, BLUESKY_LIMITS)

    assert len(picture.data) <= BLUESKY_LIMITS.max_bytes and picture.mime in ("image/png", "image/webp")
    result = opened(picture.data).convert("RGBA")
    assert result.getpixel((10, 5))[3] < 16 and result.getpixel((10, result.height - 5))[3] > 240


def test_mastodon_takes_its_instance_limits_for_pixels_too():
    data = encoded(photo(3000, 2000), "JPEG", quality=70)
    small_instance = images.limits_for("mastodon", max_image_bytes=None, max_image_pixels=2_000_000,
                                       instance="https://small.example")

    picture = images.fit(data, small_instance)

    assert picture.width * picture.height <= 2_000_000 and "Mastodon (small.example)" in picture.resized
    assert images.fit(data, images.limits_for("mastodon")).data == data  # 16 MB and 8K by default


# ── left out, with the reason ────────────────────────────────────────────────


def animation(frames: int, size: tuple[int, int]) -> bytes:
    first, *rest = [photo(*size).quantize(colors=64, dither=Image.Dither.NONE) for _ in range(frames)]
    return encoded(first, "GIF", save_all=True, append_images=rest, duration=80, loop=0)


def test_an_animated_gif_too_big_is_left_out_never_re_encoded():
    data = animation(6, (800, 600))
    assert len(data) > BLUESKY_LIMITS.max_bytes

    with pytest.raises(LeftOut, match=r"an animation of [\d,]+ bytes, over Bluesky's limit of 1,000,000 bytes"):
        images.fit(data, BLUESKY_LIMITS)
    # Within Mastodon's limit it goes as it is; X takes none through the upload syndicate makes.
    assert images.fit(data, images.limits_for("mastodon")).data == data
    with pytest.raises(LeftOut, match="chunked upload"):
        images.fit(animation(2, (40, 30)), X_LIMITS)


@pytest.mark.parametrize("data, reason", [
    (b"<!doctype html><html><body>Log in</body></html>", "not a JPEG, PNG, GIF or WebP picture"),
    (b"%PDF-1.7\n", "not a JPEG, PNG, GIF or WebP picture"),
    (b"\xff\xd8\xff\xe0" + b"\0" * 200, "could not be read as a picture"),  # a JPEG's first bytes, then nothing
])
def test_what_is_not_a_picture_is_left_out(data, reason):
    with pytest.raises(LeftOut, match=reason):
        images.fit(data, images.limits_for("mastodon"))


def test_a_picture_that_would_decode_to_billions_of_pixels_is_left_out_before_decoding():
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")

    started = time.monotonic()
    with pytest.raises(LeftOut, match=r"more pixels than a post's picture is read at \(Image size \(10000000000"):
        images.fit(bomb, BLUESKY_LIMITS)
    assert time.monotonic() - started < 1


def test_a_png_is_decoded_whole_only_up_to_25_megapixels_and_a_jpeg_up_to_50():
    """A PNG is decoded whole before it can be made smaller (100 MB as RGBA at 25 megapixels); a JPEG is decoded
    at an eighth of its size, so a camera's 30 megapixels go."""
    flat = encoded(Image.new("L", (6000, 5000), 128), "PNG")  # 30 megapixels, a few kilobytes as a file

    with pytest.raises(LeftOut, match=r"6,000×5,000 pixels, more than a post's picture is read at \(25,000,000\)"):
        images.fit(flat, Limits(name="X", max_bytes=len(flat) - 1))
    camera = encoded(Image.new("RGB", (6000, 5000), (90, 120, 150)), "JPEG", quality=90)
    picture = images.fit(camera, Limits(name="X", max_bytes=len(camera) - 1))
    assert (picture.width, picture.height) == (2000, 1667) and picture.mime == "image/jpeg"


def test_a_picture_too_big_at_every_size_is_left_out_with_the_limit():
    tiny = Limits("a tiny network", 2_000)
    with pytest.raises(LeftOut, match="over a tiny network's limit of 2,000 bytes, and still too big at 800 pixels"):
        images.fit(encoded(photo(1200, 900), "JPEG", quality=90), tiny)


# ── fetching, through the ingest guard ───────────────────────────────────────


@pytest.fixture
def http():
    with fetch.client(allow_private=True, timeout=5.0) as client:
        yield client


def fetched(http, url: str) -> bytes:
    return images.fetch_source(http, url, referer="https://news.example/2026/05/東京", deadline=time.monotonic() + 5,
                               now=T0)


def test_it_fetches_the_picture_with_the_story_as_referer(http, feed_server):
    data = encoded(photo(200, 100), "PNG")
    url = feed_server.serve("/img/a.png", data, **{"Content-Type": "image/png"})

    assert fetched(http, url) == data
    headers = dict(feed_server.requests[-1][1])
    assert headers["Referer"] == "https://news.example/2026/05/%E6%9D%B1%E4%BA%AC"
    assert "image/" in headers["Accept"]


@pytest.mark.parametrize("status, content_type, reason", [
    (404, "text/html", "answered 404"),
    (200, "text/html; charset=utf-8", "answers text/html, not a picture"),
])
def test_a_picture_that_cannot_be_fetched_says_why(http, feed_server, status, content_type, reason):
    url = feed_server.serve("/img/gone.jpg", b"<html>nope</html>", status=status, **{"Content-Type": content_type})
    with pytest.raises(LeftOut, match=reason):
        fetched(http, url)


def test_a_picture_on_this_machine_is_refused_unless_private_fetching_is_allowed(feed_server):
    url = feed_server.serve("/img/a.png", encoded(photo(20, 10), "PNG"), **{"Content-Type": "image/png"})
    with fetch.client(allow_private=False, timeout=5.0) as guarded, pytest.raises(LeftOut, match="private or local"):
        fetched(guarded, url)
    assert not feed_server.requests


def test_a_picture_larger_than_anything_read_is_refused_unread(http, feed_server, monkeypatch):
    monkeypatch.setattr(images, "SOURCE_MAX_BYTES", 1_000)
    url = feed_server.serve("/img/huge.jpg", b"\xff\xd8\xff" + b"\0" * 5_000, **{"Content-Type": "image/jpeg"})
    with pytest.raises(LeftOut, match="larger than 1,000 bytes"):
        fetched(http, url)
