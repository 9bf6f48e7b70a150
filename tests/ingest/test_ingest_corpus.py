"""feed → article on a corpus of feeds as the web writes them, served by a real local HTTP server.

Every feed is a file in tests/corpus/; each test says what a reader would see once it is
polled: titles in the right characters, absolute links, dates in UTC, each story once,
and a lead with no markup in it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from syndicate.db import transaction
from syndicate.ingest import feeds
from syndicate.models import Article, Feed

CORPUS = Path(__file__).parents[1] / "corpus"
T0 = datetime(2030, 1, 6, 7, 0, tzinfo=UTC)  # after every sensible date in the corpus
INTERVAL = timedelta(seconds=900)
RSS = "application/rss+xml"  # no charset: the document's own declaration decides
ATOM = "application/atom+xml"


def serve(feed_server, name: str, content_type: str = RSS, path: str | None = None) -> str:
    """Serve tests/corpus/<name> as it is on disk, with this Content-Type and nothing else."""
    path = path or f"/corpus/{name}"
    feed_server.routes[path] = (200, {"Content-Type": content_type}, (CORPUS / name).read_bytes())
    return feed_server.base + path


def add(svc, url: str) -> int:
    with transaction(svc.Session) as session:
        return feeds.add_feed(session, url).id


def poll(svc, feed_id: int, now: datetime = T0) -> feeds.PollResult:
    with transaction(svc.Session) as session:
        return feeds.poll(session, session.get(Feed, feed_id), svc.settings, now)


def poll_ok(svc, feed_id: int, now: datetime = T0) -> feeds.PollResult:
    result = poll(svc, feed_id, now)
    assert result.status == "ok", result.error
    return result


def stored(svc) -> list[Article]:
    with transaction(svc.Session) as session:
        return list(session.scalars(select(Article).order_by(Article.id)))


def ingest(svc, feed_server, name: str, content_type: str = RSS) -> list[Article]:
    poll_ok(svc, add(svc, serve(feed_server, name, content_type)))
    articles = stored(svc)
    assert_a_reader_sees_clean_stories(articles)
    return articles


MARKUP = re.compile(r"<[a-zA-Z/!]|&(#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);")


def assert_a_reader_sees_clean_stories(articles: list[Article]) -> None:
    """What every stored story must look like, whatever the feed was like."""
    for article in articles:
        parts = urlsplit(article.url)
        assert parts.scheme in ("http", "https") and parts.hostname, f"link not absolute: {article.url!r}"
        assert not parts.fragment
        assert article.published_at.tzinfo is not None
        assert article.published_at.utcoffset() == timedelta(0)
        assert article.title.strip() and article.title == " ".join(article.title.split())
        assert not MARKUP.search(article.title), article.title
        assert not MARKUP.search(article.lead), article.lead
        assert article.lead == " ".join(article.lead.split())
        assert "\ufffd" not in article.title + article.lead, "characters lost to a wrong encoding"
    assert len({a.identity for a in articles}) == len(articles)
    assert len({a.url for a in articles}) == len(articles), "the same story twice"


# ── encodings ────────────────────────────────────────────────────────────────


ENCODINGS = [
    pytest.param("iso-8859-1.xml", RSS,
                 ["Café-Besitzer in Zürich erhält Preis", "Straße gesperrt: Bauarbeiten bis März"],
                 "Der Besitzer des Cafés «Süß» erhält den Stadtpreis. Die Übergabe ist am Freitag.",
                 id="iso-8859-1-in-the-prolog"),
    pytest.param("windows-1252.xml", RSS,
                 ["“Smart” quotes — and a €5 coffee…"],
                 "Word’s “smart” quotes survive the trip. So does the € sign.",
                 id="windows-1252-in-the-prolog"),
    pytest.param("utf8-bom.xml", RSS,
                 ["Smørrebrød for everyone in Århus"],
                 "Open sandwiches are free on Friday. Lines are expected.",
                 id="utf-8-with-a-bom"),
    pytest.param("utf-16.xml", RSS,
                 ["Η Αθήνα υποδέχεται το φεστιβάλ"],
                 "Το φεστιβάλ αρχίζει αύριο. Η είσοδος είναι δωρεάν.",
                 id="utf-16"),
    pytest.param("charset-in-header-only.xml", RSS + "; charset=windows-1251",
                 ["В Москве открылась новая станция метро"],
                 "Станция открылась утром. Первые пассажиры получили подарки.",
                 id="charset-only-in-the-http-header"),
    pytest.param("iso-8859-1.xml", RSS + "; charset=utf-8",
                 ["Café-Besitzer in Zürich erhält Preis", "Straße gesperrt: Bauarbeiten bis März"],
                 "Der Besitzer des Cafés «Süß» erhält den Stadtpreis. Die Übergabe ist am Freitag.",
                 id="iso-8859-1-though-the-header-says-utf-8"),
]


@pytest.mark.parametrize("name, content_type, titles, first_lead", ENCODINGS)
def test_it_reads_titles_and_leads_in_the_encoding_the_feed_uses(
        svc, feed_server, name, content_type, titles, first_lead):
    articles = ingest(svc, feed_server, name, content_type)

    assert [a.title for a in articles] == titles
    assert articles[0].lead == first_lead


def test_it_keeps_cjk_titles_and_leads_intact(svc, feed_server):
    articles = ingest(svc, feed_server, "cjk.xml")

    assert [a.title for a in articles] == ["東京で桜が満開に", "北京举办国际书展", "서울에서 새로운 지하철 노선 개통"]
    assert [a.lead for a in articles] == [
        "東京の桜が満開になりました。週末は花見客で混雑が予想されます。",
        "国际书展今天在北京开幕。",
        "새 노선이 오늘 개통했습니다.",
    ]
    assert [a.published_at for a in articles] == [
        datetime(2029, 3, 31, 18, 0, tzinfo=UTC),
        datetime(2029, 3, 31, 18, 0, tzinfo=UTC),
        datetime(2029, 3, 31, 16, 0, tzinfo=UTC),
    ]



def test_it_stores_titles_as_the_site_wrote_them_emoji_and_joiners_intact(svc, feed_server):
    """Joiners, emoji tags and variation selectors are part of a title's characters, not noise: stored as
    written (in NFC), with only what can reorder or hide text taken out (a right-to-left override)."""
    articles = sorted(ingest(svc, feed_server, "emoji.xml"), key=lambda a: a.published_at)

    assert [a.title for a in articles] == [
        "Family day 👩\u200d👩\u200d👧\u200d👦 at the park",
        "Scotland 🏴\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F and Wales "
        "🏴\U000E0067\U000E0062\U000E0077\U000E006C\U000E0073\U000E007F draw",
        "Pride march 🏳\ufe0f\u200d🌈 fills the square",
        "می\u200cخواهم بروم",
        "Caf\u00e9 owner wins prize",  # NFC, and no override
    ]
    assert articles[0].lead == "A day out for every family 👨\u200d👩\u200d👧. Games start at noon."
    assert articles[4].lead == "The owner of the caf\u00e9 won. She was delighted."

# ── formats ──────────────────────────────────────────────────────────────────


FORMATS = [
    pytest.param("rss091-netscape.xml", RSS, [
        ("Café on the square reopens", "http://gazette.example/1999/cafe.html", T0,
         "The café on the market square opened its doors again on Monday. Regulars queued from seven o'clock."),
        ("Bridge repairs finished early", "http://gazette.example/1999/bridge.html", T0,
         "Repairs to the old stone bridge finished two weeks ahead of schedule. "
         "Traffic flows again in both directions."),
    ], id="rss-0.91-with-the-netscape-doctype-and-html-entities"),
    pytest.param("rss092.xml", RSS, [
        ("Tall ship arrives for the festival", "https://harbour.example/log/tall-ship", T0,
         "A three-masted tall ship docked at pier four this morning. It stays until the end of the festival."),
        ("Ferry timetable changes", "https://harbour.example/log/ferry", T0,
         "The winter timetable starts on Sunday. The last ferry leaves at nine."),
    ], id="rss-0.92"),
    pytest.param("rss10-rdf.xml", RSS, [
        ("A comet brighter than expected", "https://science.example/notes/comet",
         datetime(2029, 3, 4, 20, 30, tzinfo=UTC),
         "The comet is now visible to the naked eye after sunset. Astronomers had expected it to stay faint."),
        ("Bees count to four", "https://science.example/notes/bees", datetime(2029, 3, 5, 8, 0, tzinfo=UTC),
         "Honeybees can tell three flowers from four. The result surprised the authors."),
    ], id="rss-1.0-rdf"),
    pytest.param("dates.xml", RSS, [
        ("No date at all", "https://dates.example/undated", T0,
         "This item carries no date. It is dated when first seen."),
        ("From the far future", "https://dates.example/future", T0,
         "A broken clock on the server. The story is dated when first seen."),
        ("A named US time zone", "https://dates.example/est", datetime(2029, 1, 2, 14, 0, tzinfo=UTC),
         "Eastern Standard Time is five hours behind UTC."),
        ("GMT spelled out", "https://dates.example/gmt", datetime(2029, 1, 3, 23, 59, 59, tzinfo=UTC),
         "The last second of the day."),
        ("A Dublin Core date with an offset", "https://dates.example/dc", datetime(2029, 1, 4, 1, 0, tzinfo=UTC),
         "India Standard Time is five and a half hours ahead."),
        ("A date nobody can read", "https://dates.example/garbage", T0,
         "The date is nonsense. It is dated when first seen."),
    ], id="rss-2.0-with-missing-future-and-zoned-dates"),
    pytest.param("atom03.xml", ATOM, [
        ("First tomatoes of the year", "https://garden.example/2029/04/tomatoes",
         datetime(2029, 4, 1, 22, 0, tzinfo=UTC),
         "The greenhouse tomatoes are ripe, three weeks early. The trick was a warmer spring."),
        ("Planting out the beans", "https://garden.example/2029/04/beans", datetime(2029, 4, 2, 7, 15, tzinfo=UTC),
         "The runner beans went out today. Frost is not expected again."),
    ], id="atom-0.3"),
    pytest.param("atom10.xml", ATOM, [
        ("Caching everything", "https://blog.example/posts/2029/caching", datetime(2029, 5, 10, 9, 0, tzinfo=UTC),
         "We put a cache in front of every service. Latency fell by half."),
        ("Retiring the old queue", "https://blog.example/posts/2029/queue", datetime(2029, 5, 9, 8, 30, tzinfo=UTC),
         "The old queue served us for ten years. Today it was switched off."),
    ], id="atom-1.0"),
]


@pytest.mark.parametrize("name, content_type, expected", FORMATS)
def test_it_reads_every_feed_format_as_a_reader_would(svc, feed_server, name, content_type, expected):
    articles = ingest(svc, feed_server, name, content_type)

    assert [(a.title, a.url, a.published_at, a.lead) for a in articles] == expected


def test_it_dates_stories_without_a_usable_date_when_first_seen(svc, feed_server):
    articles = {a.title: a for a in ingest(svc, feed_server, "dates.xml")}

    for title in ("No date at all", "From the far future", "A date nobody can read"):
        assert articles[title].published_at == articles[title].first_seen_at == T0
    assert all(a.published_at <= T0 for a in articles.values())


def test_it_takes_the_lead_image_from_an_rss_enclosure(svc, feed_server):
    tall_ship, ferry = ingest(svc, feed_server, "rss092.xml")

    assert tall_ship.image_url == "https://harbour.example/img/tall-ship.jpg"
    assert ferry.image_url is None


def test_it_keeps_markup_out_of_an_atom_html_title(svc, feed_server):
    caching, _ = ingest(svc, feed_server, "atom10.xml", ATOM)

    assert caching.title == "Caching everything"


def test_it_leaves_share_buttons_out_of_an_rdf_lead_but_keeps_the_full_content(svc, feed_server):
    comet, _ = ingest(svc, feed_server, "rss10-rdf.xml")

    assert "Share this" not in comet.lead
    assert comet.content_html.startswith("<p>The comet is now visible")
    assert comet.author == "R. Astra"


# ── relative links ───────────────────────────────────────────────────────────


def test_it_makes_a_relative_item_link_absolute_against_the_feed_address(svc, feed_server):
    url = serve(feed_server, "relative-links.xml", path="/feeds/relative.xml")
    poll_ok(svc, add(svc, url))

    root_relative, _ = stored(svc)

    assert root_relative.url == feed_server.base + "/2029/05/story.html"
    assert f'<a href="{feed_server.base}/about"' in root_relative.content_html


def test_it_resolves_relative_links_in_content_against_the_item_link(svc, feed_server):
    url = serve(feed_server, "relative-links.xml", path="/feeds/relative.xml")
    poll_ok(svc, add(svc, url))

    _, photos = stored(svc)

    assert photos.url == "https://relative.example/2029/05/photos.html"
    assert '<a href="https://relative.example/2029/05/gallery.html"' in photos.content_html
    assert 'src="https://relative.example/2029/05/img/sunset.jpg"' in photos.content_html
    assert photos.image_url == "https://relative.example/2029/05/img/sunset.jpg"


def test_it_resolves_relative_links_in_atom_content_against_xml_base(svc, feed_server):
    caching, queue = ingest(svc, feed_server, "atom10.xml", ATOM)

    assert caching.url == "https://blog.example/posts/2029/caching"
    assert '<a href="https://blog.example/posts/2029/diagrams/cache.png"' in caching.content_html
    assert caching.image_url == "https://blog.example/posts/2029/img/cache.png"
    assert queue.url == "https://blog.example/posts/2029/queue"


# ── duplicates and edits ─────────────────────────────────────────────────────


def test_it_stores_a_story_once_across_feeds_whatever_tracking_its_link_carries(svc, feed_server):
    wire = add(svc, serve(feed_server, "duplicates-a.xml"))
    aggregator = add(svc, serve(feed_server, "duplicates-b.xml"))

    first = poll_ok(svc, wire)
    second = poll_ok(svc, aggregator)

    articles = stored(svc)
    assert_a_reader_sees_clean_stories(articles)
    assert len(first.new_article_ids) == 2  # the repost with another guid is the same story
    assert len(second.new_article_ids) == 1
    assert [(a.title, a.url, a.feed_id) for a in articles] == [
        ("Election results are in", "https://news.example/politics/results?id=42", wire),
        ("Storm warning for the coast", "https://news.example/weather/storm", wire),
        ("Results from the other district", "https://news.example/politics/results?id=43", aggregator),
    ]


def test_it_stores_nothing_new_when_both_feeds_are_polled_again(svc, feed_server):
    wire = add(svc, serve(feed_server, "duplicates-a.xml"))
    aggregator = add(svc, serve(feed_server, "duplicates-b.xml"))
    poll_ok(svc, wire)
    poll_ok(svc, aggregator)

    again = [poll_ok(svc, feed_id, T0 + INTERVAL) for feed_id in (wire, aggregator)]

    assert [r.new_article_ids for r in again] == [[], []]
    assert len(stored(svc)) == 3


def test_it_updates_an_edited_item_in_place_and_leaves_the_others_alone(svc, feed_server):
    feed_id = add(svc, serve(feed_server, "edited-v1.xml", path="/daily.xml"))
    poll_ok(svc, feed_id)
    (bridge_before, library_before) = stored(svc)

    serve(feed_server, "edited-v2.xml", path="/daily.xml")
    later = T0 + INTERVAL
    result = poll_ok(svc, feed_id, later)

    bridge, library = stored(svc)
    assert result.new_article_ids == []
    assert result.updated == 1
    assert bridge.id == bridge_before.id
    assert bridge.title == "Deputy mayor opens new bridge"
    assert bridge.lead == "The deputy mayor opened the new bridge on Tuesday. It cost 14 million."
    assert "Correction: an earlier version named the mayor." in bridge.content_html
    assert (bridge.updated_at, bridge.first_seen_at) == (later, T0)
    assert bridge.content_hash != bridge_before.content_hash
    assert library.updated_at is None
    assert library.content_hash == library_before.content_hash


def test_it_keeps_two_feeds_stories_apart_when_both_number_their_guids_from_one(svc, feed_server):
    def one_item(title: str, link: str) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>t</title>'
            "<link>https://x.example/</link><description>d</description>"
            f'<item><title>{title}</title><link>{link}</link><guid isPermaLink="false">1</guid>'
            f"<description>{title}. Nothing else happened.</description></item></channel></rss>"
        ).encode()

    feed_server.serve("/bakery.xml", one_item("Bakery opens", "https://bakery.example/opens"))
    feed_server.serve("/football.xml", one_item("Club wins the cup", "https://football.example/cup"))
    bakery = add(svc, feed_server.base + "/bakery.xml")
    football = add(svc, feed_server.base + "/football.xml")

    poll_ok(svc, bakery)
    result = poll_ok(svc, football)

    assert len(result.new_article_ids) == 1
    assert [(a.title, a.feed_id) for a in stored(svc)] == [("Bakery opens", bakery), ("Club wins the cup", football)]


# ── bozo feeds: keep what parsed ─────────────────────────────────────────────


def test_it_keeps_a_feed_with_unescaped_ampersands(svc, feed_server):
    review, times = ingest(svc, feed_server, "bozo-ampersand.xml")

    assert review.title == "Fish & Chips & Peas: a review"
    assert review.url == "https://bits.example/review?dish=fish&chips=1"
    assert review.lead == "Fish & chips, done right. The peas were mushy."
    assert times.title == "Opening times"


def test_it_keeps_the_stories_of_a_truncated_feed_that_arrived_whole(svc, feed_server):
    feed_id = add(svc, serve(feed_server, "bozo-truncated.xml"))

    result = poll_ok(svc, feed_id)

    articles = {a.title: a for a in stored(svc)}
    assert len(result.new_article_ids) >= 2
    assert articles["The first story arrived whole"].url == "https://cut.example/first"
    assert articles["The first story arrived whole"].lead == "This story was sent in full. Nothing is missing."
    assert articles["So did the second"].url == "https://cut.example/second"
    assert articles["So did the second"].published_at == datetime(2029, 5, 5, 9, 0, tzinfo=UTC)


def test_it_shows_a_story_cut_off_by_a_truncated_fetch_once_when_the_whole_feed_arrives(svc, feed_server):
    truncated = (CORPUS / "bozo-truncated.xml").read_bytes()
    whole = truncated + (
        b'ird</link>\n      <guid isPermaLink="false">cut-3</guid>\n'
        b"      <description>The third story, at last. It came whole this time.</description>\n"
        b"    </item>\n  </channel>\n</rss>\n"
    )
    feed_server.serve("/cut.xml", truncated, **{"Content-Type": RSS})
    feed_id = add(svc, feed_server.base + "/cut.xml")
    poll_ok(svc, feed_id)

    feed_server.serve("/cut.xml", whole, **{"Content-Type": RSS})
    poll_ok(svc, feed_id, T0 + INTERVAL)

    articles = stored(svc)
    assert sorted(a.title for a in articles) == ["So did the second", "The first story arrived whole",
                                                 "The third was cut"]
    assert_a_reader_sees_clean_stories(articles)


# ── the whole corpus ─────────────────────────────────────────────────────────


CONTENT_TYPES = {"charset-in-header-only.xml": RSS + "; charset=windows-1251", "atom03.xml": ATOM,
                 "atom10.xml": ATOM}


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.xml")))
def test_it_gives_a_reader_clean_stories_from_every_feed_of_the_corpus(svc, feed_server, name):
    articles = ingest(svc, feed_server, name, CONTENT_TYPES.get(name, RSS))

    assert articles
    assert all(a.lead for a in articles if a.title != "The third was cut")  # cut off before its text


def test_it_leaves_a_story_alone_when_a_second_feed_carries_a_shorter_copy_of_it(svc, feed_server):
    def one_item(guid: str, body: str) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>t</title>'
            "<link>https://x.example/</link><description>d</description>"
            f'<item><title>Election results are in</title><link>https://news.example/results?utm_source={guid}</link>'
            f'<guid isPermaLink="false">{guid}</guid><description>{body}</description></item></channel></rss>'
        ).encode()

    full = "The results were announced tonight. Turnout was high. The count took all day."
    short = "The results were announced tonight."
    wire = add(svc, feed_server.serve("/wire.xml", one_item("wire-1", full), **{"Content-Type": RSS}))
    aggregator = add(svc, feed_server.serve("/agg.xml", one_item("agg-1", short), **{"Content-Type": RSS}))

    rounds = [[poll_ok(svc, feed_id, T0 + n * INTERVAL).updated for feed_id in (wire, aggregator)]
              for n in range(2)]

    (article,) = stored(svc)
    assert rounds == [[0, 0], [0, 0]]
    assert article.lead == "The results were announced tonight. Turnout was high."
    assert article.updated_at is None


def test_it_keeps_the_lead_of_a_long_cjk_story_short(svc, feed_server):
    paragraph = "東京の桜が満開になりました。" * 100
    feed_server.serve("/ja.xml", (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>アジア速報</title>'
        "<link>https://asia.example/</link><description>d</description>"
        "<item><title>東京で桜が満開に</title><link>https://asia.example/ja/long</link><guid>ja-long</guid>"
        f"<description>&lt;p&gt;{paragraph}&lt;/p&gt;</description></item></channel></rss>"
    ).encode(), **{"Content-Type": RSS})
    poll_ok(svc, add(svc, feed_server.base + "/ja.xml"))

    (article,) = stored(svc)

    assert article.lead.startswith("東京の桜が満開になりました。")
    assert len(article.lead) <= 400
