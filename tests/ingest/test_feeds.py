"""feed → article, against a real local HTTP server: polite fetching, each story stored once, failures recorded."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from syndicate.db import transaction
from syndicate.errors import InvalidInput
from syndicate.ingest import documents, feeds
from syndicate.ingest.feeds import PollResult
from syndicate.models import Article, Feed

ARMENIA_URL = "https://truthusa.example/armenia-conducts-joint-military-exercises-with-us/"
ARMENIA_LEAD = (
    "The Joint U.S.-Armenian military exercises began this week in Yerevan, Armenia’s capital, "
    "resulting in tension with Russia, which sees Armenia as its regional ally. "
    "The drills involve 175 Armenian and 85 U.S. soldiers, including members of the Kansas National "
    "Guard, and are aimed at training Armenia’s military for international peacekeeping operations."
)
T0 = datetime(2030, 1, 6, 7, 0, tzinfo=UTC)  # after every date in the sample feed
INTERVAL = timedelta(seconds=900)  # the default poll interval


def rss(*items: dict, title: str = "Other News") -> bytes:
    """A small RSS 2.0 document; each item gives guid, link, title, body and optionally pubDate."""
    parts = []
    for item in items:
        date = f"<pubDate>{item['date']}</pubDate>" if item.get("date") else ""
        guid = f"<guid isPermaLink=\"false\">{item['guid']}</guid>" if item.get("guid") else ""
        parts.append(
            f"<item><title>{item['title']}</title><link>{item['link']}</link>{guid}{date}"
            f"<description><![CDATA[{item['body']}]]></description></item>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        f"<title>{title}</title><link>https://other.example/</link><description>d</description>"
        + "".join(parts) + "</channel></rss>"
    ).encode()


OTHER_FEED = rss(
    {"guid": "other-1", "link": "https://other.example/one", "title": "One", "body": "<p>First story. More.</p>",
     "date": "Mon, 01 Jan 2029 10:00:00 +0000"},
    {"guid": "other-2", "link": "https://other.example/two", "title": "Two", "body": "<p>Second story. More.</p>",
     "date": "Mon, 01 Jan 2029 11:00:00 +0000"},
)


# ── helpers: one short transaction per step, as the workers do ───────────────


def add(svc, url: str) -> int:
    with transaction(svc.Session) as session:
        return feeds.add_feed(session, url).id


def poll(svc, feed_id: int, now: datetime = T0, settings=None) -> PollResult:
    with transaction(svc.Session) as session:
        return feeds.poll(session, session.get(Feed, feed_id), settings or svc.settings, now)


def feed_row(svc, feed_id: int) -> Feed:
    with transaction(svc.Session) as session:
        return session.get(Feed, feed_id)


def stored(svc, feed_id: int | None = None) -> list[Article]:
    with transaction(svc.Session) as session:
        query = select(Article).order_by(Article.id)
        if feed_id is not None:
            query = query.where(Article.feed_id == feed_id)
        return list(session.scalars(query))


def article_count(svc) -> int:
    with transaction(svc.Session) as session:
        return session.scalar(select(func.count(Article.id)))


# ── a good feed ──────────────────────────────────────────────────────────────


def test_it_stores_every_story_of_the_sample_feed(svc, feed_server, sample_feed):
    feed_id = add(svc, feed_server.serve("/feed.xml", sample_feed))

    result = poll(svc, feed_id)

    assert result.status == "ok"
    assert result.error is None
    assert len(result.new_article_ids) == 4
    articles = stored(svc, feed_id)
    assert [a.id for a in articles] == sorted(result.new_article_ids)
    assert [a.title for a in articles] == [
        "Armenia Conducts Joint Military Exercises With US, Straining Relations With Regional Partner Russia",
        "City Council Approves Budget for New Riverside Library",
        "Heatwave Pushes Power Grid to Record Demand Across Texas",
        "Local Bakery Wins National Award for Sourdough — and Plans a Second Shop",
    ]


def test_it_stores_the_armenia_story_with_all_its_parts(svc, feed_server, sample_feed):
    feed_id = add(svc, feed_server.serve("/feed.xml", sample_feed))
    poll(svc, feed_id)

    armenia = stored(svc, feed_id)[0]

    assert armenia.url == ARMENIA_URL
    assert armenia.identity == f"feed:{armenia.feed_id}|https://truthusa.example/?p=101"  # a guid, scoped to its feed
    assert armenia.lead == ARMENIA_LEAD
    assert armenia.author == "TruthUSA"
    assert armenia.categories == ["World News"]
    assert armenia.image_url == "https://truthusa.example/wp-content/uploads/2023/09/armenia-drills.jpg"
    assert armenia.published_at == datetime(2023, 9, 12, 14, 5, tzinfo=UTC)
    assert armenia.published_at.tzinfo is not None
    assert armenia.first_seen_at == T0
    assert armenia.updated_at is None
    assert "<script" not in armenia.content_html


def test_it_gives_each_story_a_lead_without_boilerplate_and_the_image_only_where_there_is_one(
        svc, feed_server, sample_feed):
    feed_id = add(svc, feed_server.serve("/feed.xml", sample_feed))
    poll(svc, feed_id)

    _, council, heatwave, bakery = stored(svc, feed_id)

    assert council.lead == ("The city council voted 7–2 on Monday night to fund a new public library on the "
                            "Riverside waterfront. Construction is expected to begin next spring and take about "
                            "eighteen months.")
    assert heatwave.lead == ("Texas set a new record for electricity demand on Monday as temperatures climbed "
                             "above 40 °C in much of the state. Grid operators asked residents to conserve power "
                             "during the evening peak.")
    assert bakery.lead.startswith("Crème & Crumb, the family bakery on Elm Street")
    assert "Source link" not in bakery.lead
    assert council.image_url is None
    assert heatwave.image_url == "https://truthusa.example/wp-content/uploads/2023/09/grid.jpg"
    assert all(a.published_at.tzinfo is not None for a in (council, heatwave, bakery))


def test_it_records_a_successful_poll_on_the_feed(svc, feed_server, sample_feed):
    feed_id = add(svc, feed_server.serve("/feed.xml", sample_feed))

    poll(svc, feed_id)

    feed = feed_row(svc, feed_id)
    assert feed.last_fetched_at == feed.last_success_at == T0
    assert feed.last_error is None
    assert feed.error_count == 0
    assert feed.next_fetch_at == T0 + INTERVAL
    assert feed.title == "TruthUSA News Hub"  # as the feed names itself: the desk shows it


def test_it_stores_nothing_new_when_polled_again(svc, feed_server, sample_feed):
    feed_id = add(svc, feed_server.serve("/feed.xml", sample_feed))
    poll(svc, feed_id)

    again = poll(svc, feed_id, T0 + INTERVAL)

    assert again.status == "ok"
    assert again.new_article_ids == []
    assert again.updated == 0
    assert article_count(svc) == 4


def test_it_identifies_itself_with_a_syndicate_user_agent(svc, feed_server, sample_feed):
    feed_id = add(svc, feed_server.serve("/feed.xml", sample_feed))

    poll(svc, feed_id)

    (path, headers), = feed_server.requests
    assert path == "/feed.xml"
    assert headers["User-Agent"].startswith("syndicate/")


# ── conditional GET ──────────────────────────────────────────────────────────


ETAG, MODIFIED = '"v1-abc"', "Tue, 12 Sep 2023 14:05:00 GMT"


def serve_with_validators(feed_server, body: bytes, answer_304: bool) -> str:
    """The feed with an ETag and Last-Modified; answers 304 to a matching If-None-Match when asked to."""

    def answer(handler):
        if answer_304 and handler.headers.get("If-None-Match") == ETAG:
            return 304, {"ETag": ETAG}, b""
        return 200, {"Content-Type": "application/rss+xml", "ETag": ETAG, "Last-Modified": MODIFIED}, body

    feed_server.routes["/feed.xml"] = (200, {}, answer)
    return feed_server.base + "/feed.xml"


def test_it_sends_a_conditional_get_with_the_stored_validators(svc, feed_server, sample_feed):
    feed_id = add(svc, serve_with_validators(feed_server, sample_feed, answer_304=False))

    assert poll(svc, feed_id).status == "ok"
    feed = feed_row(svc, feed_id)
    assert (feed.etag, feed.last_modified) == (ETAG, MODIFIED)
    poll(svc, feed_id, T0 + INTERVAL)

    (_, first), (_, second) = feed_server.requests
    assert "If-None-Match" not in first and "If-Modified-Since" not in first
    assert second["If-None-Match"] == ETAG
    assert second["If-Modified-Since"] == MODIFIED


def test_it_takes_a_304_as_not_modified_and_parses_nothing(svc, feed_server, sample_feed, monkeypatch):
    feed_id = add(svc, serve_with_validators(feed_server, sample_feed, answer_304=True))
    poll(svc, feed_id)

    def must_not_parse(*args, **kwargs):
        raise AssertionError("a 304 answer was parsed")

    monkeypatch.setattr(feeds, "read", must_not_parse)  # what a poll parses with
    result = poll(svc, feed_id, T0 + INTERVAL)

    assert result.status == "not-modified", result.error
    assert result.new_article_ids == []
    assert result.error is None
    assert len(feed_server.requests) == 2
    assert article_count(svc) == 4
    feed = feed_row(svc, feed_id)
    assert feed.error_count == 0
    assert feed.last_success_at == T0 + INTERVAL
    assert feed.next_fetch_at == T0 + 2 * INTERVAL
    assert feed.etag == ETAG


# ── identity: edits and duplicates ───────────────────────────────────────────


def test_it_updates_an_edited_story_without_making_it_new(svc, feed_server):
    item = {"guid": "story-1", "link": "https://news.example/story-1", "title": "First title",
            "body": "<p>Original first sentence. Original second sentence.</p>",
            "date": "Mon, 01 Jan 2029 10:00:00 +0000"}
    url = feed_server.serve("/feed.xml", rss(item))
    feed_id = add(svc, url)
    (article_id,) = poll(svc, feed_id).new_article_ids

    feed_server.serve("/feed.xml", rss({**item, "title": "Corrected title",
                                        "body": "<p>Corrected first sentence. Corrected second sentence.</p>"}))
    later = T0 + INTERVAL
    result = poll(svc, feed_id, later)

    assert result.status == "ok"
    assert result.new_article_ids == []
    assert result.updated == 1
    (article,) = stored(svc)
    assert article.id == article_id
    assert article.title == "Corrected title"
    assert article.lead == "Corrected first sentence. Corrected second sentence."
    assert article.updated_at == later
    assert article.first_seen_at == T0


def test_it_stores_the_same_story_from_two_feeds_once(svc, feed_server):
    body = "<p>The same story. Told twice.</p>"
    feed_a = add(svc, feed_server.serve("/a.xml", rss(
        {"guid": "a-17", "link": "https://News.Example/story?id=5&utm_source=x&fbclid=y#comments",
         "title": "Same story", "body": body})))
    feed_b = add(svc, feed_server.serve("/b.xml", rss(
        {"guid": "b-99", "link": "https://news.example/story?id=5", "title": "Same story", "body": body})))

    first = poll(svc, feed_a)
    second = poll(svc, feed_b)

    assert len(first.new_article_ids) == 1
    assert second.status == "ok"
    assert second.new_article_ids == []
    (article,) = stored(svc)
    assert article.url == "https://news.example/story?id=5"
    assert article.feed_id == feed_a


def test_it_keeps_two_stories_apart_when_their_links_differ_in_a_real_parameter(svc, feed_server):
    feed_id = add(svc, feed_server.serve("/feed.xml", rss(
        {"guid": "p-1", "link": "https://news.example/story?id=1&utm_medium=rss", "title": "One", "body": "<p>A.</p>"},
        {"guid": "p-2", "link": "https://news.example/story?id=2&utm_medium=rss", "title": "Two", "body": "<p>B.</p>"},
    )))

    assert len(poll(svc, feed_id).new_article_ids) == 2
    assert [a.url for a in stored(svc)] == ["https://news.example/story?id=1", "https://news.example/story?id=2"]


def test_it_falls_back_to_the_link_when_an_item_has_no_guid(svc, feed_server):
    feed_id = add(svc, feed_server.serve("/feed.xml", rss(
        {"link": "https://news.example/no-guid?utm_campaign=z", "title": "No guid", "body": "<p>Text.</p>"})))

    poll(svc, feed_id)

    (article,) = stored(svc)
    assert article.identity == "https://news.example/no-guid"


# ── dates ────────────────────────────────────────────────────────────────────


def test_it_dates_a_story_without_pubdate_or_from_the_future_when_first_seen(svc, feed_server):
    feed_id = add(svc, feed_server.serve("/feed.xml", rss(
        {"guid": "undated", "link": "https://news.example/undated", "title": "Undated", "body": "<p>A.</p>"},
        {"guid": "future", "link": "https://news.example/future", "title": "Future", "body": "<p>B.</p>",
         "date": "Fri, 01 Jan 2100 00:00:00 +0000"},
        {"guid": "dated", "link": "https://news.example/dated", "title": "Dated", "body": "<p>C.</p>",
         "date": "Mon, 01 Jan 2029 10:00:00 +0200"},
    )))

    poll(svc, feed_id)

    undated, future, dated = stored(svc)
    assert undated.published_at == undated.first_seen_at == T0
    assert future.published_at == T0
    assert dated.published_at == datetime(2029, 1, 1, 8, 0, tzinfo=UTC)


# ── failures ─────────────────────────────────────────────────────────────────

HTML_PAGE = (b"<!DOCTYPE html><html><head><title>Welcome to our site</title></head>"
             b"<body><h1>Hello</h1><p>This is a web page, not a feed.</p></body></html>")


def answer_500(server, svc, feed_id, request):
    server.serve("/feed.xml", b"Internal Server Error", status=500, **{"Content-Type": "text/plain"})


def answer_html(server, svc, feed_id, request):
    server.serve("/feed.xml", HTML_PAGE, **{"Content-Type": "text/html; charset=utf-8"})


def answer_random_bytes(server, svc, feed_id, request):
    server.serve("/feed.xml", random.Random(7).randbytes(4096), **{"Content-Type": "application/octet-stream"})


def answer_nothing(server, svc, feed_id, request):
    port = request.getfixturevalue("closed_port")
    with transaction(svc.Session) as session:
        session.get(Feed, feed_id).url = f"http://127.0.0.1:{port}/feed.xml"


def answer_410(server, svc, feed_id, request):
    server.serve("/feed.xml", b"Gone", status=410, **{"Content-Type": "text/plain"})


FAILURES = [
    pytest.param(answer_500, "error", "HTTP 500", id="500"),
    pytest.param(answer_html, "error", "not a feed", id="html-page"),
    pytest.param(answer_random_bytes, "error", "not a feed", id="random-bytes"),
    pytest.param(answer_nothing, "error", "cannot fetch", id="closed-port"),
    pytest.param(answer_410, "gone", "410", id="410"),
]


@pytest.mark.parametrize("break_feed, status, error", FAILURES)
def test_it_records_a_failed_poll_and_keeps_what_it_had(
        svc, feed_server, sample_feed, request, break_feed, status, error):
    feed_id = add(svc, feed_server.serve("/feed.xml", sample_feed))
    poll(svc, feed_id)
    break_feed(feed_server, svc, feed_id, request)
    now = T0 + INTERVAL

    result = poll(svc, feed_id, now)

    assert result.status == status
    assert error in result.error
    assert result.new_article_ids == []
    feed = feed_row(svc, feed_id)
    assert feed.last_error == result.error
    assert feed.error_count == 1
    assert feed.last_fetched_at == now
    assert feed.last_success_at == T0
    assert feed.next_fetch_at > now
    assert len(stored(svc, feed_id)) == 4


@pytest.mark.parametrize("break_feed, status, error", FAILURES)
def test_it_polls_another_feed_normally_in_the_same_run_as_a_failing_one(
        svc, feed_server, sample_feed, request, break_feed, status, error):
    broken = add(svc, feed_server.serve("/feed.xml", sample_feed))
    poll(svc, broken)
    healthy = add(svc, feed_server.serve("/other.xml", OTHER_FEED))
    break_feed(feed_server, svc, broken, request)
    now = T0 + INTERVAL

    with transaction(svc.Session) as session:
        results = [feeds.poll(session, session.get(Feed, feed_id), svc.settings, now) for feed_id in (broken, healthy)]

    assert [r.status for r in results] == [status, "ok"]
    assert len(results[1].new_article_ids) == 2
    assert len(stored(svc, broken)) == 4
    assert [a.title for a in stored(svc, healthy)] == ["One", "Two"]
    other = feed_row(svc, healthy)
    assert other.last_error is None
    assert other.error_count == 0
    assert other.status == "active"


def test_it_backs_off_exponentially_after_each_failure_and_recovers(svc, feed_server, sample_feed):
    feed_id = add(svc, feed_server.serve("/feed.xml", b"down", status=500))

    poll(svc, feed_id, T0)
    first = feed_row(svc, feed_id)
    t1 = first.next_fetch_at
    poll(svc, feed_id, t1)
    second = feed_row(svc, feed_id)
    t2 = second.next_fetch_at
    poll(svc, feed_id, t2)
    third = feed_row(svc, feed_id)

    assert first.next_fetch_at - T0 == INTERVAL
    assert second.next_fetch_at - t1 == 2 * INTERVAL
    assert third.next_fetch_at - t2 == 4 * INTERVAL
    assert (first.error_count, second.error_count, third.error_count) == (1, 2, 3)

    feed_server.serve("/feed.xml", sample_feed)
    result = poll(svc, feed_id, third.next_fetch_at)

    assert result.status == "ok"
    recovered = feed_row(svc, feed_id)
    assert recovered.error_count == 0
    assert recovered.last_error is None
    assert recovered.next_fetch_at == third.next_fetch_at + INTERVAL


def test_it_caps_the_backoff_at_a_day(svc, feed_server):
    feed_id = add(svc, feed_server.serve("/feed.xml", b"down", status=500))
    with transaction(svc.Session) as session:
        session.get(Feed, feed_id).error_count = 20

    poll(svc, feed_id, T0)

    assert feed_row(svc, feed_id).next_fetch_at == T0 + timedelta(hours=24)


def test_it_disables_a_feed_that_is_gone(svc, feed_server):
    feed_id = add(svc, feed_server.serve("/feed.xml", b"Gone", status=410))

    result = poll(svc, feed_id)

    assert result.status == "gone"
    assert "410" in result.error
    assert feed_row(svc, feed_id).status == "disabled"
    with transaction(svc.Session) as session:
        assert feeds.due_feed_ids(session, T0 + timedelta(days=30)) == []


def test_it_waits_as_long_as_a_429_retry_after_asks(svc, feed_server):
    feed_id = add(svc, feed_server.serve("/feed.xml", b"slow down", status=429, **{"Retry-After": "120"}))

    result = poll(svc, feed_id)

    assert result.status == "error"
    assert "429" in result.error
    feed = feed_row(svc, feed_id)
    assert feed.next_fetch_at == T0 + timedelta(seconds=120)
    assert feed.status == "active"
    with transaction(svc.Session) as session:
        assert feeds.due_feed_ids(session, T0 + timedelta(seconds=119)) == []
        assert feeds.due_feed_ids(session, T0 + timedelta(seconds=120)) == [feed_id]


def test_it_follows_a_301_and_keeps_the_new_address(svc, feed_server, sample_feed):
    new_url = feed_server.serve("/new/feed.xml", sample_feed)
    old_url = feed_server.serve("/old.xml", b"", status=301, Location="/new/feed.xml")
    feed_id = add(svc, old_url)

    result = poll(svc, feed_id)

    assert result.status == "ok"
    assert len(result.new_article_ids) == 4
    assert result.url == new_url
    assert feed_row(svc, feed_id).url == new_url
    poll(svc, feed_id, T0 + INTERVAL)
    assert [path for path, _ in feed_server.requests] == ["/old.xml", "/new/feed.xml", "/new/feed.xml"]


def test_it_follows_a_302_but_keeps_the_old_address(svc, feed_server, sample_feed):
    feed_server.serve("/today.xml", sample_feed)
    old_url = feed_server.serve("/feed.xml", b"", status=302, Location=feed_server.base + "/today.xml")
    feed_id = add(svc, old_url)

    assert poll(svc, feed_id).status == "ok"
    assert feed_row(svc, feed_id).url == old_url


def test_it_refuses_a_feed_larger_than_the_size_cap(svc, feed_server, sample_feed, make_settings):
    feed_id = add(svc, feed_server.serve("/feed.xml", sample_feed))
    small = make_settings(feed_max_bytes=1000)
    assert len(sample_feed) > 1000

    result = poll(svc, feed_id, settings=small)

    assert result.status == "error"
    assert "larger than 1,000 bytes" in result.error
    assert feed_row(svc, feed_id).last_error == result.error
    assert article_count(svc) == 0


def test_it_refuses_a_feed_on_a_private_address_unless_allowed(svc, feed_server, sample_feed, make_settings):
    feed_id = add(svc, feed_server.serve("/feed.xml", sample_feed))

    result = poll(svc, feed_id, settings=make_settings(allow_private_feeds=0))

    assert result.status == "error"
    assert "127.0.0.1" in result.error
    assert "SYNDICATE_ALLOW_PRIVATE_FEEDS" in result.error
    assert feed_server.requests == []
    assert article_count(svc) == 0


def test_it_records_an_empty_answer_as_not_a_feed(svc, feed_server):
    feed_id = add(svc, feed_server.serve("/feed.xml", b""))

    result = poll(svc, feed_id)

    assert result.status == "error"
    assert "not a feed" in result.error
    assert feed_row(svc, feed_id).error_count == 1


def test_it_unescapes_a_plain_text_description_in_the_lead(svc, feed_server):
    feed_id = add(svc, feed_server.serve("/feed.xml", rss(
        {"guid": "att", "link": "https://news.example/att", "title": "AT&amp;T results",
         "body": "AT&T said profits rose. Shares fell. Analysts shrugged."})))

    poll(svc, feed_id)

    (article,) = stored(svc)
    assert article.title == "AT&T results"
    assert article.lead == "AT&T said profits rose. Shares fell."


# ── addresses ────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("url", ["ftp://news.example/feed.xml", "file:///etc/passwd", "news.example/feed",
                                 "javascript:alert(1)", "http://"])
def test_it_accepts_only_http_and_https_feed_addresses(url):
    with pytest.raises(InvalidInput, match=r"http:// or https:// URL"):
        feeds.check_url(url)


def test_it_adds_a_feed_once_with_a_normalised_address(svc):
    first = add(svc, "  HTTPS://News.Example  ")
    second = add(svc, "https://news.example/")

    assert first == second
    assert feed_row(svc, first).url == "https://news.example/"


def test_it_does_not_add_a_feed_with_a_bad_address(svc):
    with pytest.raises(InvalidInput):
        add(svc, "file:///etc/passwd")
    with transaction(svc.Session) as session:
        assert session.scalar(select(func.count(Feed.id))) == 0


@pytest.mark.parametrize(
    "given, expected",
    [
        ("https://news.example/a?utm_source=x&utm_medium=rss&utm_campaign=c", "https://news.example/a"),
        ("https://news.example/a?id=3&fbclid=abc&gclid=def", "https://news.example/a?id=3"),
        ("https://news.example/a?UTM_Source=x&page=2#comments", "https://news.example/a?page=2"),
        ("HTTPS://News.EXAMPLE/Path/Keeps/Case", "https://news.example/Path/Keeps/Case"),
        ("https://news.example", "https://news.example/"),
        ("  https://news.example/a#top  ", "https://news.example/a"),
    ],
)
def test_it_canonicalises_links(given, expected):
    assert documents.canonical_url(given) == expected


def test_it_lists_only_active_feeds_that_are_due(svc, feed_server, sample_feed):
    fresh = add(svc, feed_server.serve("/feed.xml", sample_feed))
    polled = add(svc, feed_server.serve("/other.xml", OTHER_FEED))
    poll(svc, polled, T0)

    with transaction(svc.Session) as session:
        assert feeds.due_feed_ids(session, T0) == [fresh]
        assert set(feeds.due_feed_ids(session, T0 + INTERVAL)) == {fresh, polled}


def test_a_large_poll_parses_in_other_processes_and_stores_each_story_once(svc, feed_server, sample_feed):
    """100 feeds carrying the same four stories: parsed in a process pool, stored by 16 threads at once."""
    with transaction(svc.Session) as session:
        ids = [feeds.add_feed(session, feed_server.serve(f"/copy/{i}.xml", sample_feed)).id for i in range(100)]
    assert len(ids) >= feeds.PARSE_IN_PROCESSES_FROM

    results = feeds.poll_many(svc.Session, svc.settings, ids)

    assert [r.status for r in results] == ["ok"] * 100
    assert sum(len(r.new_article_ids) for r in results) == 4
    with transaction(svc.Session) as session:
        assert session.scalar(select(func.count()).select_from(Article)) == 4
