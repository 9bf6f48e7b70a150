"""article → post with its picture: checked once when the posts are planned (fetched from a real local server,
fitted per network, the outcome on each post), fetched again when each goes, and never holding one up;
an account with images off (set with `syndicate account`) posts none."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import requests
import responses
from PIL import Image
from sqlalchemy import select

from conftest import cli_in, configured
from syndicate import tasks
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.models import Article, Post, SocialAccount, utcnow
from syndicate.social import checks, posts
from syndicate.social.images import BLUESKY_LIMITS, X_LIMITS

ALT = "Ferries wait at the quay at dawn"
TWEETS = "https://api.twitter.com/2/tweets"
UPLOAD = "https://api.twitter.com/2/media/upload"
X_CREDENTIALS = dict(x_consumer_key="ck", x_consumer_secret="cs", x_access_token="at", x_access_token_secret="ats")


def big_jpeg() -> bytes:
    """5.9 MB: over X's 5 MiB and Bluesky's 1,000,000 bytes, within Mastodon's 16 MB."""
    gradient = Image.linear_gradient("L").resize((3000, 2000))
    photo = Image.merge("RGB", (gradient, Image.effect_noise((3000, 2000), 60), gradient))
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=95)
    return out.getvalue()


BIG = big_jpeg()
PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><meta property="og:title" content="Ferries resume">
<meta property="og:description" content="At dawn."></head><body><p>Story</p></body></html>"""


def feed(base: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Harbour</title><link>{base}/</link>
<item><title>Ferries resume</title><link>{base}/2026/05/ferries</link>
  <description><![CDATA[<figure><img src="{base}/img/ferries.jpg" alt="{ALT}"></figure>
  <p>Ferries resume at dawn. The quay reopened.</p>]]></description></item>
<item><title>Council votes</title><link>{base}/2026/05/council</link>
  <description><![CDATA[<img src="{base}/img/council.jpg"><p>The council voted. It passed.</p>]]></description>
</item>
</channel></rss>""".encode()


@pytest.fixture
def newsroom(tmp_path, feed_server):
    """The harbour feed with two stories — one picture too big for X and Bluesky, one that is a login page —
    and three dry-run accounts added with `syndicate account`, Mastodon's with --no-images."""
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
           "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1", "SYNDICATE_BASE_URL": "https://news.example"}
    syndicate = cli_in(env)
    base = feed_server.base
    feed_server.serve("/harbour/", feed(base))
    feed_server.serve("/2026/05/ferries", PAGE, **{"Content-Type": "text/html"})  # a card without a picture
    feed_server.serve("/img/ferries.jpg", BIG, **{"Content-Type": "image/jpeg"})
    feed_server.serve("/img/council.jpg", b"<html>Please log in</html>", **{"Content-Type": "text/html"})
    syndicate("db", "upgrade")
    syndicate("feed", "add", f"{base}/harbour/")
    pace = ("--dry-run", "--window", "always", "--max-age", "0", "--min-gap", "0")
    syndicate("account", "add", "desk-x", "--network", "x", *pace)
    syndicate("account", "add", "desk-m", "--network", "mastodon", "--instance", "https://social.example", *pace,
              "--no-images")
    syndicate("account", "add", "desk-b", "--network", "bluesky", "--handle", "news.example", *pace)
    syndicate("feed", "poll", "--all")
    svc = configured(Settings.from_env(env), eager=True)
    with transaction(svc.Session) as session:
        planned = list(session.scalars(select(Post.id).where(Post.status == "pending")))
    checks.check_cards(svc.Session, svc.settings, planned)  # as the social tick does for the posts it planned
    return syndicate, svc


def by_account(syndicate) -> dict[tuple[str, str], dict]:
    listed = json.loads(syndicate("post", "list", "--json"))
    return {(p["account"], p["url"].split("/")[-1].split("?")[0]): p for p in listed}


def test_each_post_says_at_planning_which_picture_it_will_carry_or_why_none(newsroom, feed_server):
    syndicate, svc = newsroom
    listed = by_account(syndicate)

    assert json.loads(syndicate("account", "show", "desk-m", "--json"))["settings"]["images"] is False
    x, bluesky = listed[("desk-x", "ferries")]["image"], listed[("desk-b", "ferries")]["image"]
    assert x["bytes"] <= X_LIMITS.max_bytes and bluesky["bytes"] <= BLUESKY_LIMITS.max_bytes < x["bytes"]
    assert x["alt"] == bluesky["alt"] == ALT and x["type"] == "image/jpeg" and "3,000×2,000 JPEG" in x["resized"]
    for account in ("desk-x", "desk-b"):
        council = listed[(account, "council")]
        assert council["image"] is None and "answers text/html, not a picture" in council["image_error"]
    for story in ("ferries", "council"):  # images off: nothing fetched for it, nothing said
        assert listed[("desk-m", story)]["image"] is listed[("desk-m", story)]["image_error"] is None
    # Each picture fetched once for all the accounts that take it.
    assert [path for path, _ in feed_server.requests].count("/img/ferries.jpg") == 1


def test_each_post_goes_with_its_picture_fetched_again_and_the_dry_run_writes_the_uploads(newsroom):
    syndicate, svc = newsroom
    listed = by_account(syndicate)

    for post in listed.values():
        assert tasks.publish_post.apply(args=(post["id"],)).get() == "posted"

    def sent(account: str, story: str) -> dict:
        path = svc.settings.outbox / "posts" / f"syndicate-post-{listed[(account, story)]['id']}.json"
        return json.loads(Path(path).read_text(encoding="utf-8"))

    x = sent("desk-x", "ferries")
    assert x["upload"]["file"]["sha256"] == listed[("desk-x", "ferries")]["image"]["sha256"]
    assert x["metadata"]["json"]["metadata"] == {"alt_text": {"text": ALT}}
    assert x["request"]["json"]["media"] == {"media_ids": ["(the id the upload answers)"]}
    bluesky = sent("desk-b", "ferries")
    assert bluesky["upload"]["sha256"] == listed[("desk-b", "ferries")]["image"]["sha256"]
    # The page has a card but no picture of its own: the story's picture is its thumb.
    assert bluesky["request"]["json"]["record"]["embed"]["external"]["thumb"]["size"] == bluesky["upload"]["bytes"]
    for account, story in (("desk-m", "ferries"), ("desk-x", "council"), ("desk-b", "council")):
        assert "upload" not in sent(account, story)
    assert "media_ids[]" not in sent("desk-m", "ferries")["request"]["form"]


def test_an_editor_turns_pictures_back_on_for_the_posts_planned_next(newsroom):
    syndicate, svc = newsroom
    syndicate("account", "edit", "desk-m", "--images")
    assert json.loads(syndicate("account", "show", "desk-m", "--json"))["settings"]["images"] is True
    syndicate("account", "edit", "desk-x", "--no-images")

    with transaction(svc.Session) as session:
        article = session.scalar(select(Article).where(Article.url.endswith("/ferries")))
        ids = [posts.reshare(session, article, session.scalar(select(SocialAccount).where(SocialAccount.name == n)),
                             now=utcnow()).id for n in ("desk-m", "desk-x")]
    checks.check_images(svc.Session, svc.settings, ids)
    listed = {p["id"]: p for p in json.loads(syndicate("post", "list", "--json"))}

    assert listed[ids[0]]["image"]["alt"] == ALT and listed[ids[0]]["image"]["resized"] is None  # within 16 MB
    assert listed[ids[1]]["image"] is None and listed[ids[1]]["image_error"] is None
    # Turned off after planning: the post that waits goes without it.
    ferries_x = by_account(syndicate)[("desk-x", "ferries")]
    assert tasks.publish_post.apply(args=(ferries_x["id"],)).get() == "posted"
    written = json.loads((svc.settings.outbox / "posts" / f"syndicate-post-{ferries_x['id']}.json").read_text())
    assert "upload" not in written


# ── live X: a picture that fails never holds up the post ─────────────────────


@pytest.fixture
def live_x(make_settings, tmp_path, feed_server):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'live.db'}", **X_CREDENTIALS), eager=True)
    image = feed_server.serve("/img/ferries.jpg", BIG, **{"Content-Type": "image/jpeg"})
    now = utcnow()
    with transaction(svc.Session) as session:
        session.add(SocialAccount(name="x", network="x", settings=dict(window="always", min_gap=0, max_age=0),
                                  created_at=now))
        session.add(Article(identity="a", url=feed_server.base + "/2026/05/ferries", title="Ferries resume at dawn",
                            lead="", content_hash="0" * 64, categories=[], published_at=now, first_seen_at=now,
                            image_url=image, image_alt=ALT))
        session.flush()
        [post_id] = posts.plan(session, svc.settings, now)
    checks.check_images(svc.Session, svc.settings, [post_id])
    return svc, post_id


def reload(svc, post_id: int) -> Post:
    with transaction(svc.Session) as session:
        return session.get(Post, post_id)


def test_a_failing_upload_still_posts_the_teaser_without_its_picture_and_records_why(live_x):
    svc, post_id = live_x
    assert reload(svc, post_id).payload["image"]["bytes"] <= X_LIMITS.max_bytes

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, UPLOAD, status=503, json={"title": "Service Unavailable", "detail": "over capacity"})
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1234", "text": "…"}})
        assert tasks.publish_post.apply(args=(post_id,)).get() == "posted"
        assert "media" not in json.loads(rsps.calls[-1].request.body)

    post = reload(svc, post_id)
    assert (post.status, post.remote_id, post.error) == ("posted", "1234", None)
    assert post.payload["image_error"] == "X refused the picture (503: over capacity); the post went without it"


def test_a_picture_gone_by_posting_time_leaves_the_post_to_go_without_it(live_x, feed_server):
    svc, post_id = live_x
    feed_server.routes.pop("/img/ferries.jpg")

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1234", "text": "…"}})
        assert tasks.publish_post.apply(args=(post_id,)).get() == "posted"
        assert len(rsps.calls) == 1

    assert "answered 404" in reload(svc, post_id).payload["image_error"]


def test_a_retried_post_uploads_again_but_is_never_posted_twice(live_x):
    svc, post_id = live_x

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, UPLOAD, json={"data": {"id": "1"}})
        rsps.add(responses.POST, UPLOAD, json={"data": {"id": "2"}})
        rsps.add(responses.POST, "https://api.twitter.com/2/media/metadata", json={"data": {}})
        rsps.add(responses.POST, TWEETS, body=requests.ReadTimeout("no answer"))  # it may have gone out
        rsps.add(responses.POST, TWEETS, status=403, json={
            "detail": "You are not allowed to create a Tweet with duplicate content.", "status": 403})
        tasks.publish_post.apply(args=(post_id,))
        assert reload(svc, post_id).status == "pending" and reload(svc, post_id).uncertain
        with transaction(svc.Session) as session:
            session.get(Post, post_id).next_attempt_at = utcnow()
        tasks.publish_post.apply(args=(post_id,))
        uploads = [c for c in rsps.calls if c.request.url == UPLOAD]

    post = reload(svc, post_id)
    assert len(uploads) == 2 and post.status == "ambiguous" and "probably posted" in post.error
