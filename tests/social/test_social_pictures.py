"""A story's picture on each network, through the real clients with HTTP intercepted: tweepy's session
signing the v2 media upload (`responses`), Mastodon.py uploading with a description and waiting out its
processing (`responses`), atproto uploading the blob (`respx`) — and the dry run writing the same requests."""

from __future__ import annotations

import base64
import io
import json
import re
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs

import pytest
import requests
import responses
import respx
from oauthlib.oauth1 import Client as OAuthClient
from PIL import Image
from test_social_clients import (
    DID,
    HANDLE,
    INSTANCE,
    PDS,
    STATUS,
    STATUSES,
    T0,
    TWEETS,
    URL,
    bluesky_client,
    body,
    card,
    created,
    mastodon_client,
    no_network,
    post,
    session_json,
    written,
    x_client,
)

from syndicate.errors import DuplicatePost, TransportError
from syndicate.social.clients.base import Published
from syndicate.social.clients.bluesky import blob_cid
from syndicate.social.clients.dry_run import DryRunClient
from syndicate.social.clients.mastodon import UPLOADED
from syndicate.social.images import Picture
from syndicate.social.networks import BLUESKY, MASTODON, X

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")

UPLOAD = "https://api.twitter.com/2/media/upload"
METADATA = "https://api.twitter.com/2/media/metadata"
MEDIA_ID = "1880028106020515840"
ALT = "Armenian and US soldiers at the Zar training ground, 2023"
MEDIA = f"{INSTANCE}/api/v2/media"


def jpeg(width: int = 60, height: int = 40) -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(out, "JPEG", quality=80)
    return out.getvalue()


PICTURE = Picture(jpeg(), "image/jpeg", 60, 40, alt=ALT, source="https://truthusa.example/drills.jpg")


@pytest.fixture
def pds():
    """atproto's httpx, intercepted (as in test_social_clients)."""
    with respx.mock(base_url=PDS, assert_all_called=False) as mock:
        yield mock


def with_picture(network, picture: Picture = PICTURE, **kwargs):
    from dataclasses import replace

    return replace(post(network, **kwargs), image=picture)


def multipart(request) -> dict[str, tuple[str | None, str | None, bytes]]:
    """A multipart/form-data body as the server reads it: name → (filename, content type, bytes)."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode() + request.body)
    return {part.get_param("name", header="content-disposition"): (
        part.get_filename(), part.get_content_type() if part.get("Content-Type") else None,
        part.get_payload(decode=True)) for part in message.iter_parts()}


def header(request, name: str) -> str:
    value = request.headers[name]
    return value.decode() if isinstance(value, bytes) else value


# ── X ────────────────────────────────────────────────────────────────────────


def x_upload_answer(media_id: str = MEDIA_ID) -> dict:
    return {"data": {"id": media_id, "media_key": f"3_{media_id}", "size": len(PICTURE.data),
                     "expires_after_secs": 86400, "image": {"image_type": "image/jpeg", "w": 60, "h": 40}}}


def test_x_uploads_the_picture_through_v2_signed_as_tweepy_signs_then_its_alt_text_then_the_post():
    request = with_picture(X)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, UPLOAD, json=x_upload_answer())
        rsps.add(responses.POST, METADATA, json={"data": {"associated_metadata": {"alt_text": {"text": ALT}}}})
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1234", "text": "…"}})
        published = x_client(timeout=7.5).publish(request)
        upload, metadata, tweet = (call.request for call in rsps.calls)

    assert published == Published("1234", "https://x.com/i/web/status/1234")
    assert [r.url for r in (upload, metadata, tweet)] == [UPLOAD, METADATA, TWEETS]
    assert header(upload, "Content-Type").startswith("multipart/form-data; boundary=")
    assert multipart(upload) == {"media_category": (None, None, b"tweet_image"),
                                 "media_type": (None, None, b"image/jpeg"),
                                 "media": ("media.jpg", "image/jpeg", PICTURE.data)}
    assert upload.req_kwargs["timeout"] == 7.5
    # OAuth 1.0a as tweepy's own requests carry it: the same signature oauthlib makes for this URL with this
    # nonce and time and no body parameters (a multipart body is never signed).
    fields = dict(re.findall(r'(oauth_\w+)="([^"]*)"', header(upload, "Authorization")))
    assert fields["oauth_consumer_key"] == "ck" and fields["oauth_token"] == "at"
    expected = OAuthClient("ck", client_secret="cs", resource_owner_key="at", resource_owner_secret="ats",
                           nonce=fields["oauth_nonce"], timestamp=fields["oauth_timestamp"]).sign(UPLOAD, "POST")[1]
    assert fields["oauth_signature"] == dict(re.findall(r'(oauth_\w+)="([^"]*)"',
                                                        expected["Authorization"]))["oauth_signature"]
    assert json.loads(metadata.body) == {"id": MEDIA_ID, "metadata": {"alt_text": {"text": ALT}}}
    assert header(metadata, "Authorization").startswith("OAuth ")
    assert json.loads(tweet.body) == {"text": request.teaser.text, "media": {"media_ids": [MEDIA_ID]}}


def test_x_uploads_with_the_oauth2_user_token_when_one_is_given():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, UPLOAD, json=x_upload_answer())
        rsps.add(responses.POST, METADATA, json={"data": {}})
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "99", "text": "…"}})
        x_client(bearer_token="oauth2-user-token").publish(with_picture(X))
        assert all(call.request.headers["Authorization"] == "Bearer oauth2-user-token" for call in rsps.calls)


def test_x_posts_without_the_picture_when_the_upload_fails_and_says_why():
    request = with_picture(X)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, UPLOAD, status=400, json={"errors": [{"message": "media type unrecognized."}],
                                                           "title": "Invalid Request", "detail": "One or more "
                                                           "parameters to your request was invalid."})
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1234", "text": "…"}})
        published = x_client().publish(request)
        assert json.loads(rsps.calls[-1].request.body) == {"text": request.teaser.text}

    assert published.remote_id == "1234"
    assert published.image_error.startswith("X refused the picture (400: ") and "went without it" in \
        published.image_error


@pytest.mark.parametrize("failure", [requests.ConnectionError("reset by peer"), requests.ReadTimeout("slow")])
def test_x_posts_without_the_picture_when_the_upload_gets_no_answer(failure):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, UPLOAD, body=failure)
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1234", "text": "…"}})
        published = x_client().publish(with_picture(X))

    assert published.remote_id == "1234" and type(failure).__name__ in published.image_error


def test_x_keeps_the_picture_when_only_its_alt_text_is_refused_and_says_so():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, UPLOAD, json=x_upload_answer())
        rsps.add(responses.POST, METADATA, status=503, json={"title": "Service Unavailable"})
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1234", "text": "…"}})
        published = x_client().publish(with_picture(X))
        assert json.loads(rsps.calls[-1].request.body)["media"] == {"media_ids": [MEDIA_ID]}

    assert "alt text" in published.image_error and "503" in published.image_error


def test_x_refusing_the_post_with_its_picture_posts_it_without():
    request = with_picture(X)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, UPLOAD, json=x_upload_answer())
        rsps.add(responses.POST, METADATA, json={"data": {}})
        rsps.add(responses.POST, TWEETS, status=400, json={"errors": [{"message": "Your media IDs are invalid."}],
                                                           "title": "Invalid Request", "detail": "invalid"})
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1235", "text": "…"}})
        published = x_client().publish(request)
        tweets = [json.loads(c.request.body) for c in rsps.calls if c.request.url == TWEETS]

    assert tweets == [{"text": request.teaser.text, "media": {"media_ids": [MEDIA_ID]}}, {"text": request.teaser.text}]
    assert published.remote_id == "1235" and "Your media IDs are invalid." in published.image_error


def test_x_a_retry_uploads_again_and_the_same_text_is_still_a_duplicate():
    """X keeps no idempotency key: a second upload makes a new media id, and X refuses the same text again."""
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, UPLOAD, json=x_upload_answer("1"))
        rsps.add(responses.POST, UPLOAD, json=x_upload_answer("2"))
        rsps.add(responses.POST, METADATA, json={"data": {}})
        rsps.add(responses.POST, TWEETS, body=requests.ReadTimeout("no answer"))
        rsps.add(responses.POST, TWEETS, status=403, json={
            "detail": "You are not allowed to create a Tweet with duplicate content.", "status": 403,
            "title": "Forbidden", "type": "about:blank"})
        client = x_client()
        with pytest.raises(TransportError) as first:
            client.publish(with_picture(X))
        with pytest.raises(DuplicatePost):
            client.publish(with_picture(X))
        media = [json.loads(c.request.body)["media"] for c in rsps.calls if c.request.url == TWEETS]

    assert first.value.uncertain and media == [{"media_ids": ["1"]}, {"media_ids": ["2"]}]


# ── Mastodon ─────────────────────────────────────────────────────────────────


def attachment(url: str | None = "https://files.mastodon.social/media/1.jpg", media_id: str = "1090") -> dict:
    return {"id": media_id, "type": "image", "url": url, "preview_url": "https://files.mastodon.social/s/1.jpg",
            "description": ALT}


def test_mastodon_uploads_the_picture_with_its_description_then_posts_it_under_the_key():
    request = with_picture(MASTODON)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, MEDIA, json=attachment())
        rsps.add(responses.POST, STATUSES, json=STATUS)
        published = mastodon_client().publish(request)
        upload, status = (call.request for call in rsps.calls)

    assert published == Published("112233", "https://mastodon.social/@newsroom/112233")
    assert upload.url == MEDIA and upload.headers["Authorization"] == "Bearer mastodon-token"
    assert multipart(upload) == {"description": (None, None, ALT.encode()),
                                 "file": ("syndicate-post-7.jpg", "image/jpeg", PICTURE.data)}
    form = parse_qs(status.body)
    assert form["media_ids[]"] == ["1090"] and form["status"] == [request.teaser.text]
    assert status.headers["Idempotency-Key"] == "syndicate-post-7"


def test_mastodon_waits_a_bounded_time_for_a_picture_still_processing():
    slept: list[float] = []

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, MEDIA, status=202, json=attachment(url=None))
        rsps.add(responses.GET, f"{INSTANCE}/api/v1/media/1090", status=206, json=attachment(url=None))
        rsps.add(responses.GET, f"{INSTANCE}/api/v1/media/1090", json=attachment())
        rsps.add(responses.POST, STATUSES, json=STATUS)
        published = mastodon_client(sleep=slept.append).publish(with_picture(MASTODON))
        assert parse_qs(rsps.calls[-1].request.body)["media_ids[]"] == ["1090"]

    assert slept == [2.0, 2.0] and published.image_error is None

    slept.clear()
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, MEDIA, status=202, json=attachment(url=None))
        rsps.add(responses.GET, f"{INSTANCE}/api/v1/media/1090", status=206, json=attachment(url=None))
        rsps.add(responses.POST, STATUSES, json=STATUS)
        published = mastodon_client(sleep=slept.append).publish(with_picture(MASTODON))
        assert "media_ids[]" not in parse_qs(rsps.calls[-1].request.body)

    assert sum(slept) == 10.0 and "still processing the picture after 10 s" in published.image_error


@pytest.mark.parametrize("status, error", [(422, "File type of image/jpeg is not supported"),
                                           (413, "Payload Too Large"), (500, "Internal Server Error")])
def test_mastodon_posts_without_the_picture_the_instance_refuses(status, error):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, MEDIA, status=status, json={"error": error})
        rsps.add(responses.POST, STATUSES, json=STATUS)
        published = mastodon_client().publish(with_picture(MASTODON))
        assert "media_ids[]" not in parse_qs(rsps.calls[-1].request.body)

    assert published.remote_id == "112233" and f"refused the picture ({status}" in published.image_error


def test_mastodon_refusing_the_status_with_its_picture_posts_it_without_under_the_same_key():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, MEDIA, json=attachment())
        rsps.add(responses.POST, STATUSES, status=422,
                 json={"error": "Cannot attach files that have not finished processing. Try again in a moment!"})
        rsps.add(responses.POST, STATUSES, json=STATUS)
        published = mastodon_client().publish(with_picture(MASTODON))
        statuses = [c.request for c in rsps.calls if c.request.url == STATUSES]

    assert [parse_qs(s.body).get("media_ids[]") for s in statuses] == [["1090"], None]
    assert {s.headers["Idempotency-Key"] for s in statuses} == {"syndicate-post-7"}
    assert "not finished processing" in published.image_error


def test_mastodon_a_retry_uploads_again_and_the_key_gets_the_first_post_back():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, MEDIA, json=attachment(media_id="1"))
        rsps.add(responses.POST, MEDIA, json=attachment(media_id="2"))
        rsps.add(responses.POST, STATUSES, status=502, json={"error": "Bad Gateway"})  # it may have posted
        rsps.add(responses.POST, STATUSES, json=STATUS)  # the key: the first post, whatever media it names
        client = mastodon_client()
        with pytest.raises(TransportError) as first:
            client.publish(with_picture(MASTODON))
        again = client.publish(with_picture(MASTODON))
        statuses = [c.request for c in rsps.calls if c.request.url == STATUSES]

    assert first.value.uncertain and again.remote_id == "112233"
    assert [s.headers["Idempotency-Key"] for s in statuses] == ["syndicate-post-7"] * 2


def test_mastodon_reads_the_instance_picture_limits_with_its_rules():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, f"{INSTANCE}/api/v2/instance/", json={"configuration": {
            "statuses": {"max_characters": 500, "characters_reserved_per_url": 23},
            "media_attachments": {"image_size_limit": 10_485_760, "image_matrix_limit": 16_777_216}}})
        client = mastodon_client()
        client.rules()

    assert client.image_limits == {"max_image_bytes": 10_485_760, "max_image_pixels": 16_777_216}


# ── Bluesky ──────────────────────────────────────────────────────────────────


def uploaded(data: bytes, mime: str) -> dict:
    return {"$type": "blob", "ref": {"$link": blob_cid(data)}, "mimeType": mime, "size": len(data)}


def test_bluesky_takes_the_story_picture_as_the_card_thumb_when_the_page_has_none(pds):
    request = with_picture(BLUESKY, card=card(image=None, image_type=None))
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    upload = pds.post("/com.atproto.repo.uploadBlob").respond(json={"blob": uploaded(PICTURE.data, "image/jpeg")})
    create = pds.post("/com.atproto.repo.createRecord").respond(json=created(request.rkey))

    published = bluesky_client().publish(request)

    assert upload.calls[0].request.content == PICTURE.data
    assert upload.calls[0].request.headers["Content-Type"] == "image/jpeg"
    embed = body(create.calls[0])["record"]["embed"]
    assert embed["$type"] == "app.bsky.embed.external" and embed["external"]["uri"] == URL
    assert embed["external"]["thumb"] == uploaded(PICTURE.data, "image/jpeg")
    assert published.image_error is None


def test_bluesky_keeps_the_page_own_picture_on_its_card(pds):
    request = with_picture(BLUESKY, card=card())
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    upload = pds.post("/com.atproto.repo.uploadBlob").respond(json={"blob": uploaded(card().image, "image/png")})
    pds.post("/com.atproto.repo.createRecord").respond(json=created(request.rkey))

    bluesky_client().publish(request)

    assert upload.call_count == 1 and upload.calls[0].request.content == card().image


def test_bluesky_without_a_card_shows_the_picture_as_an_image_embed_with_its_alt_text(pds):
    request = with_picture(BLUESKY)
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    pds.post("/com.atproto.repo.uploadBlob").respond(json={"blob": uploaded(PICTURE.data, "image/jpeg")})
    create = pds.post("/com.atproto.repo.createRecord").respond(json=created(request.rkey))

    bluesky_client().publish(request)

    assert body(create.calls[0])["record"]["embed"] == {
        "$type": "app.bsky.embed.images",
        "images": [{"$type": "app.bsky.embed.images#image", "alt": ALT, "image": uploaded(PICTURE.data, "image/jpeg"),
                    "aspectRatio": {"$type": "app.bsky.embed.defs#aspectRatio", "width": 60, "height": 40}}]}


def test_bluesky_posts_without_the_picture_when_the_pds_refuses_it_and_says_why(pds):
    request = with_picture(BLUESKY, card=card(image=None, image_type=None))
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    pds.post("/com.atproto.repo.uploadBlob").respond(500, json={"error": "InternalServerError", "message": "disk"})
    create = pds.post("/com.atproto.repo.createRecord").respond(json=created(request.rkey))

    published = bluesky_client().publish(request)

    assert "thumb" not in body(create.calls[0])["record"]["embed"]["external"]
    assert published.image_error == "Bluesky refused the picture (500 InternalServerError: disk); the post went " \
                                    "without it"


# ── the dry run writes what the clients send ─────────────────────────────────


def test_dry_run_writes_the_x_upload_alt_text_and_post_as_sent(tmp_path):
    request = with_picture(X)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, UPLOAD, json=x_upload_answer())
        rsps.add(responses.POST, METADATA, json={"data": {}})
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1", "text": "…"}})
        x_client().publish(request)
        upload, metadata, tweet = (call.request for call in rsps.calls)

    with no_network():
        DryRunClient("x", "newsroom-x", tmp_path, X).publish(request)

    payload = written(tmp_path, request)
    file = multipart(upload)["media"]
    assert payload["upload"] == {
        "method": "POST", "url": upload.url,
        "form": {name: value.decode() for name, (_, _, value) in multipart(upload).items() if name != "media"},
        "file": {"name": file[0], "type": file[1], "bytes": len(file[2]), "sha256": PICTURE.sha256}}
    assert base64.b64encode(PICTURE.data)[:40].decode() not in json.dumps(payload)  # by its hash, never its bytes
    live_metadata, live_tweet = json.loads(metadata.body), json.loads(tweet.body)
    assert payload["metadata"]["json"]["id"] == "(the id the upload answers)"
    assert payload["metadata"] == {"method": "POST", "url": metadata.url,
                                   "json": {**live_metadata, "id": payload["metadata"]["json"]["id"]}}
    assert payload["request"] == {"method": "POST", "url": tweet.url, "json": {
        **live_tweet, "media": {"media_ids": ["(the id the upload answers)"]}}}


def test_dry_run_writes_the_mastodon_upload_and_status_as_sent(tmp_path):
    request = with_picture(MASTODON)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, MEDIA, json=attachment())
        rsps.add(responses.POST, STATUSES, json=STATUS)
        mastodon_client().publish(request)
        upload, status = (call.request for call in rsps.calls)

    with no_network():
        DryRunClient("mastodon", "newsroom-m", tmp_path, MASTODON, instance=INSTANCE).publish(request)

    payload = written(tmp_path, request)
    parts = multipart(upload)
    assert payload["upload"] == {"method": "POST", "url": upload.url, "form": {"description": ALT},
                                 "file": {"name": parts["file"][0], "type": parts["file"][1],
                                          "bytes": len(parts["file"][2]), "sha256": PICTURE.sha256}}
    live = parse_qs(status.body)
    sent = payload["request"]
    assert sent["headers"] == {"Idempotency-Key": status.headers["Idempotency-Key"]}
    assert {k: v if isinstance(v, list) else [v] for k, v in sent["form"].items()} == {**live,
                                                                                     "media_ids[]": [UPLOADED]}


def test_dry_run_writes_the_bluesky_blob_and_image_embed_as_sent(tmp_path, pds):
    request = with_picture(BLUESKY)
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    upload = pds.post("/com.atproto.repo.uploadBlob").respond(json={"blob": uploaded(PICTURE.data, "image/jpeg")})
    create = pds.post("/com.atproto.repo.createRecord").respond(json=created(request.rkey))
    bluesky_client(clock=lambda: T0).publish(request)
    live = body(create.calls[0])
    assert upload.calls[0].request.content == PICTURE.data
    pds.reset()

    with no_network():
        DryRunClient("bluesky", "newsroom-b", tmp_path, BLUESKY, handle=HANDLE).publish(request)

    payload = written(tmp_path, request)
    assert payload["upload"] == {"method": "POST", "url": f"{PDS}/com.atproto.repo.uploadBlob",
                                 "headers": {"Content-Type": "image/jpeg"}, "bytes": len(PICTURE.data),
                                 "sha256": PICTURE.sha256}
    dry = payload["request"]["json"]
    assert dry["repo"] == HANDLE and live["repo"] == DID
    for sent in (dry, live):
        sent.pop("repo"), sent["record"].pop("createdAt")
    assert dry == live
