"""Feeds and articles on the desk and its API: a feed served by a real local HTTP server is added, fetched at
once (tasks run inline here) and shown healthy, or failing with its error; the recent articles and each
one's trail into editions and posts. Also the domain functions underneath: feeds.health, feeds.overview,
trail.recent, trail.article_trail."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from desk_client import add_editor, api_headers, desk_client, dry_run_x_account
from desk_client import signed_in as sign_in
from syndicate.db import transaction
from syndicate.desk import trail
from syndicate.errors import NotFound
from syndicate.ingest import feeds
from syndicate.models import Article, Feed, Post, utcnow
from syndicate.newsletters import editions, lists
from syndicate.social import accounts, posts


@pytest.fixture
def client(svc):
    add_editor(svc)
    return desk_client()


@pytest.fixture
def bearer(client, svc) -> dict:
    return api_headers(svc)


def story(session, n: int, when, feed_id: int | None = None, title: str | None = None) -> Article:
    article = Article(identity=f"story-{n}", url=f"https://news.example.com/{n}/", title=title or f"Story {n}",
                      lead=f"Lead {n}.", content_hash=f"{n:064d}", categories=["Local"], published_at=when,
                      first_seen_at=when, feed_id=feed_id)
    session.add(article)
    session.flush()
    return article


def newsroom(svc) -> tuple[int, int, int]:
    """An article in an edition of "The Morning Briefing" and teased on x-main (posted): (article, edition, post)."""
    now = utcnow()
    with transaction(svc.Session) as session:
        newsletter = lists.add_newsletter(session, max_age_hours=0, slug="morning", name="The Morning Briefing",
                                          from_address="news@example.com", cron=None)
        dry_run_x_account(session, now, age=timedelta(minutes=5))
        article = story(session, 1, now, title="Council approves the riverside library")
        edition = editions.create_edition(session, newsletter, svc.settings, now=now, status="draft",
                                          articles=[article])
        [post_id] = posts.plan(session, svc.settings, now)
        post = session.get(Post, post_id)
        post.status, post.posted_at, post.remote_url = "posted", now, "https://x.com/x_main/status/1"
        return article.id, edition.id, post_id


# ── feeds on the desk ────────────────────────────────────────────────────────


def test_a_feed_added_on_the_desk_is_fetched_at_once_and_shows_healthy(client, svc, feed_server, sample_feed):
    url = feed_server.serve("/feed.xml", sample_feed)
    token = sign_in(client)
    added = client.post("/desk/feeds", data={"csrf": token, "url": url})
    assert added.status_code == 303 and added.headers["location"] == "/desk/feeds#feed-1"
    assert [path for path, _ in feed_server.requests] == ["/feed.xml"]  # fetched now, not at the next beat
    row = re.search(r'<tr id="feed-1">.*?</tr>', client.get("/desk/feeds").text, re.S).group(0)
    assert url in row and ">ok<" in row and ">4</a>" in row and "Fetch now" in row
    with transaction(svc.Session) as session:
        feed = session.get(Feed, 1)
        assert feed.last_success_at is not None and feed.error_count == 0
        assert feed.next_fetch_at > feed.last_success_at  # its next turn, shown on the page
    assert client.post("/desk/feeds/1/poll", data={"csrf": token}).status_code == 303
    assert len(feed_server.requests) == 2


def test_a_feed_answering_500_shows_failing_with_the_error(client, svc, feed_server):
    url = feed_server.serve("/broken.xml", b"upstream exploded", status=500)
    token = sign_in(client)
    client.post("/desk/feeds", data={"csrf": token, "url": url})
    client.post("/desk/feeds/1/poll", data={"csrf": token})
    row = re.search(r'<tr id="feed-1">.*?</tr>', client.get("/desk/feeds").text, re.S).group(0)
    assert ">failing<" in row and "2 in a row" in row and "HTTP 500" in row
    with transaction(svc.Session) as session:
        assert session.get(Feed, 1).last_success_at is None


def test_a_bad_feed_url_shows_the_form_again_with_what_was_typed(client, svc):
    token = sign_in(client)
    typed = 'news.example.com/feed"><script>alert(1)</script>'
    refused = client.post("/desk/feeds", data={"csrf": token, "url": typed})
    assert refused.status_code == 400 and "is not a web address we can fetch" in refused.text
    assert 'value="news.example.com/feed&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in refused.text
    assert "<script>alert(1)" not in refused.text
    with transaction(svc.Session) as session:
        assert session.scalar(select(func.count()).select_from(Feed)) == 0


def test_feed_forms_without_the_csrf_token_change_nothing(client, svc, feed_server, sample_feed):
    url = feed_server.serve("/feed.xml", sample_feed)
    sign_in(client)
    for data in ({"url": url}, {"url": url, "csrf": "forged"}):
        assert client.post("/desk/feeds", data=data).status_code == 403
    with transaction(svc.Session) as session:
        assert session.scalar(select(func.count()).select_from(Feed)) == 0
        feeds.add_feed(session, url)
    assert client.post("/desk/feeds/1/poll", data={}).status_code == 403
    assert feed_server.requests == []


def test_a_disabled_feed_is_not_fetched_on_request(client, svc):
    with transaction(svc.Session) as session:
        feeds.add_feed(session, "https://gone.example/feed/").status = "disabled"
    token = sign_in(client)
    refused = client.post("/desk/feeds/1/poll", data={"csrf": token})
    assert refused.status_code == 400 and "disabled" in refused.text
    assert "Fetch now" not in client.get("/desk/feeds").text
    assert client.post("/desk/feeds/99/poll", data={"csrf": token}).status_code == 404


# ── articles on the desk ─────────────────────────────────────────────────────


def test_the_articles_page_lists_the_newest_first_with_where_each_went(client, svc):
    article_id, _, _ = newsroom(svc)
    with transaction(svc.Session) as session:
        story(session, 2, utcnow() - timedelta(hours=1), title="Ferry timetable changes")
    sign_in(client)
    page = client.get("/desk/articles").text
    assert page.index("Council approves") < page.index("Ferry timetable")
    row = re.search(rf'<tr>\s*<td>[^\n]*\n\s*<td><a href="/desk/articles/{article_id}">.*?</tr>', page, re.S).group(0)
    assert "1 edition draft" in row and "1 post posted" in row
    assert "nowhere yet" in page  # the ferry story went nowhere
    found = client.get("/desk/articles", params={"q": "FERRY", "feed": ""}).text
    assert "Ferry timetable" in found and "Council approves" not in found and "1 article<" in found
    assert client.get("/desk/articles", params={"feed": "x"}).status_code == 400


def test_an_article_shows_its_trail_into_editions_and_posts(client, svc):
    article_id, edition_id, post_id = newsroom(svc)
    sign_in(client)
    page = client.get(f"/desk/articles/{article_id}").text
    assert "Council approves the riverside library" in page and "Lead 1." in page and ">Local<" in page
    assert '<a href="https://news.example.com/1/" rel="noreferrer">' in page
    editions_table = re.search(r'<table id="editions">.*?</table>', page, re.S).group(0)
    assert "The Morning Briefing" in editions_table and f'href="/desk/editions/{edition_id}">#1</a>' in editions_table
    assert ">draft<" in editions_table
    posts_table = re.search(r'<table id="posts">.*?</table>', page, re.S).group(0)
    assert f'<a href="/desk/posts/{post_id}">x-main</a>' in posts_table and ">posted<" in posts_table
    assert 'href="https://x.com/x_main/status/1"' in posts_table
    assert client.get("/desk/articles/999").status_code == 404


def test_a_hostile_feeds_javascript_link_is_shown_as_text(client, svc):
    with transaction(svc.Session) as session:
        article = story(session, 3, utcnow())
        article.url = "javascript:alert(document.cookie)"
    sign_in(client)
    page = client.get(f"/desk/articles/{article.id}").text
    assert 'href="javascript:' not in page and "javascript:alert(document.cookie)" in page


# ── the API ──────────────────────────────────────────────────────────────────


def test_the_api_adds_a_feed_fetches_it_and_reports_its_health(client, svc, bearer, feed_server, sample_feed):
    url = feed_server.serve("/feed.xml", sample_feed)
    added = client.post("/api/v1/feeds", json={"url": url}, headers=bearer)
    assert added.status_code == 200 and added.json()["id"] == 1 and added.json()["url"] == url
    [listed] = client.get("/api/v1/feeds", headers=bearer).json()
    assert listed["status"] == "ok" and listed["articles"] == 4 and listed["failures"] == 0
    assert listed["last_success_at"] and listed["next_fetch_at"] and listed["last_error"] is None
    assert client.post("/api/v1/feeds/1/poll", headers=bearer).json()["id"] == 1
    assert len(feed_server.requests) == 2
    bad = client.post("/api/v1/feeds", json={"url": "ftp://example.com/feed"}, headers=bearer)
    assert bad.status_code == 422 and "not a web address" in bad.json()["error"]
    assert client.post("/api/v1/feeds/99/poll", headers=bearer).status_code == 404


def test_the_api_lists_articles_and_gives_one_with_its_trail(client, svc, bearer):
    article_id, edition_id, post_id = newsroom(svc)
    listed = client.get("/api/v1/articles", params={"q": "riverside"}, headers=bearer).json()
    assert (listed["total"], listed["page"], listed["pages"]) == (1, 1, 1)
    [row] = listed["articles"]
    assert (row["id"], row["editions"], row["posts"]) == (article_id, 1, 1)
    assert row["editions_by_status"] == {"draft": 1} and row["posts_by_status"] == {"posted": 1}
    one = client.get(f"/api/v1/articles/{article_id}", headers=bearer).json()
    [edition] = one["editions"]
    assert (edition["newsletter"], edition["number"], edition["status"]) == ("The Morning Briefing", 1, "draft")
    assert edition["desk_url"] == f"/desk/editions/{edition_id}"
    [post] = one["posts"]
    assert (post["account"], post["network"], post["status"]) == ("x-main", "x", "posted")
    assert post["remote_url"] == "https://x.com/x_main/status/1" and post["desk_url"] == f"/desk/posts/{post_id}"
    assert client.get("/api/v1/articles/999", headers=bearer).status_code == 404
    assert client.get("/api/v1/articles", params={"page": 0}, headers=bearer).status_code == 422


def test_the_feeds_and_articles_api_is_documented(client):
    spec = client.get("/openapi.json").json()
    for path in ("/api/v1/feeds", "/api/v1/feeds/{feed_id}/poll", "/api/v1/articles", "/api/v1/articles/{article_id}"):
        for operation in spec["paths"][path].values():
            assert operation["tags"][0] in ("feeds", "articles") and operation["security"] == [{"HTTPBearer": []}]


# ── the domain functions underneath ──────────────────────────────────────────


def test_a_feeds_health_says_new_ok_failing_or_disabled():
    now = utcnow()
    feed = Feed(id=1, url="https://news.example.com/feed/", status="active", error_count=0, next_fetch_at=now)
    assert feeds.health(feed, now)["status"] == "new" and feeds.health(feed, now)["due"]
    feed.last_success_at, feed.next_fetch_at = now, now + timedelta(minutes=15)
    assert (feeds.health(feed, now)["status"], feeds.health(feed, now)["due"]) == ("ok", False)
    feed.error_count, feed.last_error = 3, "HTTP 503"
    failing = feeds.health(feed, now, articles=7)
    assert (failing["status"], failing["failures"], failing["last_error"], failing["articles"]) == (
        "failing", 3, "HTTP 503", 7)
    feed.status = "disabled"
    assert (feeds.health(feed, now)["status"], feeds.health(feed, now)["due"]) == ("disabled", False)


def test_the_overview_counts_each_feeds_articles(svc):
    now = utcnow()
    with transaction(svc.Session) as session:
        one = feeds.add_feed(session, "https://a.example/feed/")
        feeds.add_feed(session, "https://b.example/")
        for n in range(3):
            story(session, n, now, feed_id=one.id)
        assert [(f["url"], f["articles"]) for f in feeds.overview(session, now)] == [
            ("https://a.example/feed/", 3), ("https://b.example/", 0)]
        with pytest.raises(NotFound):
            feeds.get_feed(session, 99)


def test_recent_articles_come_fifty_a_page_newest_first_and_search_takes_wildcards_literally(svc):
    now = utcnow()
    with transaction(svc.Session) as session:
        feed = feeds.add_feed(session, "https://a.example/feed/")
        for n in range(trail.PAGE + 1):
            story(session, n, now - timedelta(minutes=n), feed_id=feed.id if n % 2 else None)
        story(session, 100, now - timedelta(days=1), title="Prices up 100% in a year")
        first, second = trail.recent(session), trail.recent(session, page=2)
        assert (first["total"], first["pages"], len(first["articles"]), len(second["articles"])) == (52, 2, 50, 2)
        assert first["articles"][0]["title"] == "Story 0" and second["articles"][-1]["title"].startswith("Prices")
        assert [a["title"] for a in trail.recent(session, "100%")["articles"]] == ["Prices up 100% in a year"]
        assert trail.recent(session, "_")["total"] == 0  # a literal underscore, not "any character"
        assert trail.recent(session, feed_id=feed.id)["total"] == trail.PAGE // 2
        assert trail.recent(session, "story 1")["total"] == 11  # 1, 10–19


def test_an_articles_trail_lists_its_editions_and_posts_oldest_first(svc):
    article_id, edition_id, post_id = newsroom(svc)
    with transaction(svc.Session) as session:
        article = session.get(Article, article_id)
        account = accounts.by_name(session, "x-main")
        again = posts.reshare(session, article, account)
        found = trail.article_trail(session, article_id)
        assert [p["id"] for p in found["posts"]] == [post_id, again.id] and found["posts"][1]["share"] == 1
        assert [e["id"] for e in found["editions"]] == [edition_id]
        with pytest.raises(NotFound):
            trail.article_trail(session, 999)
