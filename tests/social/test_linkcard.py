"""article → link card, against a real local HTTP server: the page a teaser points to, and its picture.

The page must be readable for the card to exist; the picture may fail in any way and the card
still stands. Every fetch goes through the ingest client, so the SSRF guard and the deadline hold.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syndicate.ingest import fetch
from syndicate.social import linkcard
from syndicate.social.linkcard import Card, PageUnreachable
from syndicate.text import shorten

T0 = datetime(2030, 1, 6, 7, 0, tzinfo=UTC)
HTML = {"Content-Type": "text/html; charset=UTF-8"}
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01" + bytes(range(256)) * 16
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)
DEADLINE = 1.0  # seconds, for the stalling servers


@pytest.fixture
def http():
    with fetch.client(allow_private=True, timeout=5.0) as client:
        yield client


@pytest.fixture
def silent_port():
    """A server that never answers: the kernel completes the handshake and takes the request; nobody reads it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def preflight(http, url: str, seconds: float = 5.0, **options) -> Card:
    return linkcard.preflight(http, url, deadline=time.monotonic() + seconds, now=T0, **options)


def page(head: str, body: str = "<article><p>The story.</p></article>") -> bytes:
    return (f'<!DOCTYPE html>\n<html lang="en-US">\n<head>\n<meta charset="UTF-8">\n{head}\n</head>\n'
            f"<body>\n{body}\n</body>\n</html>\n").encode()


def requested(feed_server, path: str) -> bool:
    return any(seen == path for seen, _ in feed_server.requests)


# ── a readable page ──────────────────────────────────────────────────────────


def test_it_reads_title_description_card_type_and_the_picture_of_a_wordpress_article(http, feed_server):
    feed_server.serve("/wp-content/uploads/2030/01/harbour.jpg", JPEG, **{"Content-Type": "image/jpeg"})
    url = feed_server.serve("/2030/01/06/harbour-reopens/", page(
        '<title>Harbour reopens &#8211; The Daily Example</title>\n'
        '<meta property="og:title" content="Harbour reopens after storm" />\n'
        '<meta property="og:description" content="Ferries run again &amp; the quay is open." />\n'
        '<meta property="og:image" content="/wp-content/uploads/2030/01/harbour.jpg" />\n'
        '<meta name="twitter:card" content="summary_large_image" />'), **HTML)

    card = preflight(http, url)

    assert card == Card(url=url, title="Harbour reopens after storm",
                        description="Ferries run again & the quay is open.",
                        image_url=f"{feed_server.base}/wp-content/uploads/2030/01/harbour.jpg",
                        card_type="summary_large_image", image=JPEG, image_type="image/jpeg")


def test_it_sends_the_article_page_as_referer_for_the_picture(http, feed_server):
    feed_server.serve("/photo.jpg", JPEG, **{"Content-Type": "image/jpeg"})
    url = feed_server.serve("/story", page('<meta property="og:image" content="photo.jpg">'), **HTML)

    preflight(http, url)

    headers = next(h for path, h in feed_server.requests if path == "/photo.jpg")
    assert headers["Referer"] == url


@pytest.mark.parametrize("attribute", ["property", "name", "PROPERTY", "Name"])
def test_it_reads_meta_tags_named_with_property_or_name_in_any_case(http, feed_server, attribute):
    url = feed_server.serve("/story", page(
        f'<meta {attribute}="OG:Title" content="Harbour reopens">\n'
        f'<meta {attribute}="og:description" content="Ferries run again.">\n'
        f'<meta {attribute}="Twitter:Card" content="Summary">'), **HTML)

    card = preflight(http, url)

    assert (card.title, card.description, card.card_type) == ("Harbour reopens", "Ferries run again.", "summary")


def test_it_falls_back_to_twitter_tags(http, feed_server):
    feed_server.serve("/t.png", PNG, **{"Content-Type": "image/png"})
    url = feed_server.serve("/story", page(
        "<title>Site title</title>\n"
        '<meta name="twitter:card" content="summary">\n'
        '<meta name="twitter:title" content="Harbour reopens">\n'
        '<meta name="twitter:description" content="Ferries run again.">\n'
        f'<meta name="twitter:image" content="{feed_server.base}/t.png">'), **HTML)

    card = preflight(http, url)

    assert (card.title, card.description, card.card_type) == ("Harbour reopens", "Ferries run again.", "summary")
    assert (card.image_url, card.image, card.image_type) == (f"{feed_server.base}/t.png", PNG, "image/png")


def test_it_falls_back_to_the_title_element_and_the_meta_description(http, feed_server):
    url = feed_server.serve("/story", page(
        "<title>\n  Harbour   reopens &amp; ferries\n  run again </title>\n"
        '<meta name="description" content="  The quay\n is open.  ">'), **HTML)

    card = preflight(http, url)

    assert card == Card(url=url, title="Harbour reopens & ferries run again", description="The quay is open.",
                        image_url=None, card_type=None)


def test_it_leaves_title_and_description_empty_on_a_page_without_either(http, feed_server):
    url = feed_server.serve("/story", page(""), **HTML)

    assert preflight(http, url) == Card(url=url, title="", description="", image_url=None, card_type=None)


@pytest.mark.parametrize("content_type, head", [
    ("text/html; charset=windows-1252", ""),
    ("text/html; charset=ISO-8859-1", ""),  # what browsers read as windows-1252, curly quotes and all
    ("text/html", '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'),
    ("text/html", "<meta charset='windows-1252'>"),
    ("text/html; charset=windows-1252", '<meta charset="utf-8">'),  # the header wins, as in browsers
])
def test_it_decodes_a_windows_1252_page(http, feed_server, content_type, head):
    body = (f"<html><head>{head}<title>Café owners say “never again” – the € 5 fee</title>"
            "</head><body></body></html>").encode("cp1252")
    url = feed_server.serve("/story", body, **{"Content-Type": content_type})

    assert preflight(http, url).title == "Café owners say “never again” – the € 5 fee"


def test_it_replaces_bytes_that_are_not_utf8_on_a_page_that_declares_nothing(http, feed_server):
    body = b"<html><head><title>Caf\xe9 \xff news</title></head></html>"
    url = feed_server.serve("/story", body, **{"Content-Type": "text/html"})

    assert preflight(http, url).title == "Caf\ufffd \ufffd news"


def test_it_reads_a_page_served_without_a_content_type_that_is_html(http, feed_server):
    feed_server.routes["/story"] = (200, {}, page("<title>Harbour reopens</title>"))

    assert preflight(http, f"{feed_server.base}/story").title == "Harbour reopens"


def test_it_resolves_the_picture_against_the_page_it_was_moved_to(http, feed_server):
    feed_server.serve("/new/photo.jpg", JPEG, **{"Content-Type": "image/jpeg"})
    feed_server.serve("/new/", page('<meta property="og:image" content="photo.jpg">'), **HTML)
    old = feed_server.serve("/old", b"", status=301, Location="/new/")

    card = preflight(http, old)

    assert card.url == f"{feed_server.base}/new/"
    assert (card.image_url, card.image) == (f"{feed_server.base}/new/photo.jpg", JPEG)


# ── the picture ──────────────────────────────────────────────────────────────


def test_it_leaves_the_image_empty_for_a_page_without_one(http, feed_server):
    url = feed_server.serve("/story", page('<meta property="og:title" content="Harbour reopens">'), **HTML)

    card = preflight(http, url)

    assert (card.image_url, card.image, card.image_type) == (None, None, None)


@pytest.mark.parametrize("status, content_type, body", [
    (404, "text/html", b"<h1>not found</h1>"),
    (200, "image/jpeg", b"\xff\xd8\xff" + bytes(1_000_000)),  # one byte over Bluesky's blob limit
    (200, "text/html", page("<title>A login page</title>")),
    (200, "image/jpeg", b"<html>a CDN's error page, called a picture</html>"),
    (200, "image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"/>'),  # no network takes it
    (500, "image/jpeg", JPEG),
])
def test_it_keeps_the_card_without_a_picture_that_cannot_be_used(http, feed_server, status, content_type, body):
    feed_server.serve("/photo.jpg", body, status=status, **{"Content-Type": content_type})
    url = feed_server.serve("/story", page('<meta property="og:title" content="Harbour reopens">'
                                           '<meta property="og:image" content="/photo.jpg">'), **HTML)

    card = preflight(http, url)

    assert card.title == "Harbour reopens"
    assert card.image_url == f"{feed_server.base}/photo.jpg"
    assert (card.image, card.image_type) == (None, None)


def test_it_takes_the_picture_type_from_its_bytes_not_its_label(http, feed_server):
    feed_server.serve("/photo.jpg", PNG, **{"Content-Type": "image/jpeg"})
    url = feed_server.serve("/story", page('<meta property="og:image" content="/photo.jpg">'), **HTML)

    assert preflight(http, url).image_type == "image/png"


def test_it_honours_a_smaller_image_cap(http, feed_server):
    feed_server.serve("/photo.jpg", JPEG, **{"Content-Type": "image/jpeg"})
    url = feed_server.serve("/story", page('<meta property="og:image" content="/photo.jpg">'), **HTML)

    assert preflight(http, url, max_image_bytes=len(JPEG) - 1).image is None
    assert preflight(http, url, max_image_bytes=len(JPEG)).image == JPEG


def test_it_does_not_fetch_the_picture_unless_asked(http, feed_server):
    feed_server.serve("/photo.jpg", JPEG, **{"Content-Type": "image/jpeg"})
    url = feed_server.serve("/story", page('<meta property="og:image" content="/photo.jpg">'), **HTML)

    card = preflight(http, url, fetch_image=False)

    assert (card.image_url, card.image) == (f"{feed_server.base}/photo.jpg", None)
    assert not requested(feed_server, "/photo.jpg")


def test_it_keeps_the_card_when_the_picture_stalls_past_the_deadline(http, feed_server, silent_port):
    url = feed_server.serve("/story", page('<meta property="og:title" content="Harbour reopens">'
                                           f'<meta property="og:image" content="http://127.0.0.1:{silent_port}/p.jpg">'),
                            **HTML)
    started = time.monotonic()

    card = preflight(http, url, seconds=DEADLINE)

    assert (card.title, card.image) == ("Harbour reopens", None)
    assert time.monotonic() - started < DEADLINE + 1.0


# ── an unreadable page ───────────────────────────────────────────────────────


@pytest.mark.parametrize("status", [404, 410, 500, 503])
def test_it_says_which_status_a_page_answered(http, feed_server, status):
    url = feed_server.serve("/story", page("<title>Oops</title>"), status=status, **HTML)

    with pytest.raises(PageUnreachable, match=f"the article's page answered {status} ") as raised:
        preflight(http, url)

    assert raised.value.status == status


def test_it_passes_on_when_a_busy_server_asks_to_be_tried_again(http, feed_server):
    url = feed_server.serve("/story", b"busy", status=503, **{"Content-Type": "text/html", "Retry-After": "120"})

    with pytest.raises(PageUnreachable) as raised:
        preflight(http, url)

    assert raised.value.retry_at == datetime(2030, 1, 6, 7, 2, tzinfo=UTC)


@pytest.mark.parametrize("content_type", ["application/pdf", "image/jpeg", "application/json; charset=utf-8"])
def test_it_refuses_a_page_that_is_not_html(http, feed_server, content_type):
    url = feed_server.serve("/story.pdf", b"%PDF-1.7\n", **{"Content-Type": content_type})

    with pytest.raises(PageUnreachable, match=f"not HTML but {content_type.split(';')[0]}"):
        preflight(http, url)


def test_it_refuses_a_page_larger_than_its_cap(http, feed_server):
    url = feed_server.serve("/story", page("<title>Long</title>", "<p>words</p>" * 1000), **HTML)

    with pytest.raises(PageUnreachable, match="larger than 4,000 bytes"):
        preflight(http, url, max_page_bytes=4000)


def test_it_refuses_an_address_on_this_machine_when_private_fetching_is_off(feed_server):
    url = feed_server.serve("/story", page("<title>Inside</title>"), **HTML)

    with fetch.client(allow_private=False, timeout=5.0) as guarded, \
            pytest.raises(PageUnreachable, match="a private or local address"):
        preflight(guarded, url)

    assert not feed_server.requests


def test_it_gives_up_on_a_page_that_stalls_by_the_deadline(http, silent_port):
    started = time.monotonic()

    with pytest.raises(PageUnreachable, match="within the deadline"):
        preflight(http, f"http://127.0.0.1:{silent_port}/story", seconds=DEADLINE)

    assert DEADLINE - 0.1 < time.monotonic() - started < DEADLINE + 1.0


def test_it_reports_a_server_that_is_down(http, closed_port):
    with pytest.raises(PageUnreachable, match="could not be fetched"):
        preflight(http, f"http://127.0.0.1:{closed_port}/story")


@pytest.mark.parametrize("url", ["ftp://example.com/story", "javascript:alert(1)", "/2030/01/story", "", "mailto:x@y"])
def test_it_refuses_an_address_that_is_not_http(http, url):
    with pytest.raises(PageUnreachable, match="is not an http\\(s\\) address"):
        preflight(http, url)


# ── the seed article ─────────────────────────────────────────────────────────

HEADLINE = "Armenia Conducts Joint Military Exercises With US, Straining Relations With Regional Partner Russia"
SLUG = "/armenia-conducts-joint-military-exercises-with-us/"
EXCERPT = ("The Joint U.S.-Armenian military exercises began this week in Yerevan, Armenia&#8217;s capital, "
           "resulting in tension with Russia, which sees Armenia as its regional ally. The drills involve 175 "
           "Armenian and 85 U.S. soldiers, including members of the Kansas National Guard, and are aimed at "
           "training Armenia&#8217;s military for international peacekeeping operations.")


def yoast_page(base: str) -> bytes:
    """An article page as WordPress with Yoast SEO writes it: the tags, and the noise around them."""
    image = f"{base}/wp-content/uploads/2023/10/armenia-us-exercises-1200x675.jpg"
    return page(f"""<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="profile" href="https://gmpg.org/xfn/11">
<!-- This site is optimized with the Yoast SEO plugin v21.4 - https://yoast.com/wordpress/plugins/seo/ -->
<title>{HEADLINE} - TruthUSA News Hub</title>
<meta name="description" content="{EXCERPT}" />
<meta name="robots" content="index, follow, max-image-preview:large, max-snippet:-1, max-video-preview:-1" />
<link rel="canonical" href="https://truthusa.example{SLUG}" />
<meta property="og:locale" content="en_US" />
<meta property="og:type" content="article" />
<meta property="og:title" content="{HEADLINE}" />
<meta property="og:description" content="{EXCERPT}" />
<meta property="og:url" content="https://truthusa.example{SLUG}" />
<meta property="og:site_name" content="TruthUSA News Hub" />
<meta property="article:published_time" content="2023-10-12T09:14:03+00:00" />
<meta property="og:image" content="{image}" />
<meta property="og:image:width" content="1200" />
<meta property="og:image:height" content="675" />
<meta property="og:image:type" content="image/jpeg" />
<meta name="author" content="TruthUSA Staff" />
<meta name="twitter:card" content="summary_large_image" />
<meta name="twitter:label1" content="Written by" />
<meta name="twitter:data1" content="TruthUSA Staff" />
<meta name="twitter:label2" content="Est. reading time" />
<meta name="twitter:data2" content="2 minutes" />
<script type="application/ld+json" class="yoast-schema-graph">{{"@context":"https://schema.org","@graph":[
{{"@type":"NewsArticle","headline":"{HEADLINE}","image":{{"@id":"{image}"}}}}]}}</script>
<!-- / Yoast SEO plugin. -->
<link rel='dns-prefetch' href='//fonts.googleapis.com' />
<script>window._wpemojiSettings = {{"baseUrl":"https:\\/\\/s.w.org\\/images\\/core\\/emoji\\/14.0.0\\/72x72\\/"}};
/* <meta property="og:title" content="not this"> */</script>
<style id='wp-emoji-styles-inline-css'>img.wp-smiley, img.emoji {{ display: inline !important; }}</style>
<noscript><img height="1" width="1" src="https://www.facebook.com/tr?id=1&ev=PageView&noscript=1"/></noscript>
<meta property="fb:app_id" content="1234567890" />""",
                f'<article><h1 class="entry-title">{HEADLINE}</h1><p>{EXCERPT}</p>'
                '<meta property="og:title" content="a plugin\'s tag in the body"></article>')


def test_it_builds_the_card_of_the_seed_article_from_its_yoast_tags(http, feed_server):
    feed_server.serve("/wp-content/uploads/2023/10/armenia-us-exercises-1200x675.jpg", JPEG,
                      **{"Content-Type": "image/jpeg"})
    url = feed_server.serve(SLUG, yoast_page(feed_server.base), **HTML)

    card = preflight(http, url)

    assert card.url == url
    assert card.title == HEADLINE
    assert card.description.startswith("The Joint U.S.-Armenian military exercises began this week in Yerevan, "
                                       "Armenia’s capital, resulting in tension with Russia")
    assert card.description.endswith("for international peacekeeping operations.")
    assert card.card_type == "summary_large_image"
    assert card.image_url == f"{feed_server.base}/wp-content/uploads/2023/10/armenia-us-exercises-1200x675.jpg"
    assert (card.image, card.image_type) == (JPEG, "image/jpeg")


# ── parse, on plain data ─────────────────────────────────────────────────────

PAGE_URL = "https://news.example/2030/01/story/"


def test_it_prefers_the_https_image_when_the_page_offers_one():
    card = linkcard.parse(page('<meta property="og:image" content="http://cdn.example/a.jpg">'
                               '<meta property="og:image:secure_url" content="https://cdn.example/a.jpg">'), PAGE_URL)

    assert card.image_url == "https://cdn.example/a.jpg"


@pytest.mark.parametrize("value, expected", [
    ("//cdn.example/a.jpg", "https://cdn.example/a.jpg"),
    ("../../a.jpg", "https://news.example/2030/a.jpg"),
    ("  https://CDN.example/a.jpg#top ", "https://cdn.example/a.jpg"),
    ("data:image/png;base64,iVBORw0KGgo=", None),
    ("javascript:alert(1)", None),
    ("http://[::1", None),
    ("", None),
    ("/images/東京.jpg?w=北京", "https://news.example/images/%E6%9D%B1%E4%BA%AC.jpg?w=%E5%8C%97%E4%BA%AC"),
    ("https://例え.jp/a.jpg", "https://xn--r8jz45g.jp/a.jpg"),
    ("https://user:secret@cdn.example/a.jpg", None),  # no public picture's address carries a password
])
def test_it_makes_the_image_address_absolute_and_http(value, expected):
    assert linkcard.parse(page(f'<meta property="og:image" content="{value}">'), PAGE_URL).image_url == expected


def test_it_resolves_the_image_against_the_page_base():
    card = linkcard.parse(page('<base href="https://static.example/assets/">'
                               '<meta property="og:image" content="a.jpg">'), PAGE_URL)

    assert card.image_url == "https://static.example/assets/a.jpg"


def test_it_reads_twitters_old_value_attribute():
    card = linkcard.parse(page('<meta name="twitter:card" value="summary">'), PAGE_URL)

    assert card.card_type == "summary"


def test_it_reads_only_the_head():
    card = linkcard.parse(page("<title>In the head</title>",
                               '<meta property="og:title" content="In the body"><svg><title>Icon</title></svg>'),
                          PAGE_URL)

    assert card.title == "In the head"


def test_it_reads_a_page_without_a_head_or_html_element():
    card = linkcard.parse('<meta property=og:title content="Bare tags"><p>text', PAGE_URL)

    assert card.title == "Bare tags"


def test_it_cuts_a_long_title_and_description_at_a_word():
    title, description = "word " * 100, "Harbour reopens. " * 100
    card = linkcard.parse(page(f'<meta property="og:title" content="{title}">'
                               f'<meta property="og:description" content="{description}">'), PAGE_URL)

    assert len(card.title) <= 300 and card.title.endswith("word…")
    assert 900 < len(card.description) <= 1000 and card.description.endswith("…")
    assert description.startswith(card.description[:-1] + " ")  # whole words, then the mark


def test_it_cuts_a_title_without_spaces_where_it_must():
    assert shorten("長" * 400, 300) == "長" * 299 + "…"


def test_it_reads_a_big_page_quickly_by_stopping_at_the_head():
    body = page("<title>Quick</title>", "<p>" + "word " * 400_000 + "</p>")

    started = time.monotonic()
    assert linkcard.parse(body, PAGE_URL).title == "Quick"
    assert time.monotonic() - started < 1.0


FRAGMENTS = ['<meta ', 'property=', 'name=', 'content=', '"og:title"', '"og:description"', '"twitter:card"',
             '"og:image"', '"', "'", ">", "/>", "<title>", "</title>", "<head>", "</head>", "<body>", "<base href=",
             "&amp;", "&#8217;", "&", ";", "\n", "\x00", "\x1b", "é", "€", "\ufffd", "word ", "x" * 400, "<!--",
             "-->", "<script>", "</script>", "<?xml encoding='utf-16'?>", "<meta charset=utf-7>", "//", "http:"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=20), max_size=60).map("".join))
def test_parse_always_gives_a_card_of_clean_bounded_lines(text):
    for card in (linkcard.parse(text, PAGE_URL), linkcard.parse(text.encode("utf-8", "surrogatepass"), PAGE_URL)):
        assert len(card.title) <= 300 and len(card.description) <= 1000
        assert not any(c in text_ for text_ in (card.title, card.description) for c in "\r\n\t\x00")
        assert card.image_url is None or card.image_url.startswith(("http://", "https://"))


@given(st.binary(max_size=2000))
def test_parse_survives_any_bytes(body):
    assert isinstance(linkcard.parse(body, PAGE_URL), Card)


def test_a_story_address_with_non_ascii_in_it_still_gets_its_picture_with_a_referer_a_header_can_carry(
        http, feed_server):
    """Issue 17: the raw address (an IRI, as stories stored before links were normalised have) went into the
    image request's Referer; httpx raised UnicodeEncodeError, nothing caught it, and the Bluesky post stayed
    pending, holding its account's turn at every tick."""
    encoded = "/2026/05/%E6%9D%B1%E4%BA%AC-%E7%8C%9B%E6%9A%91/"
    feed_server.serve("/t.png", PNG, **{"Content-Type": "image/png"})
    feed_server.serve(encoded, page(f'<meta property="og:image" content="{feed_server.base}/t.png">'), **HTML)

    card = preflight(http, f"{feed_server.base}/2026/05/東京-猛暑/")

    assert (card.image, card.image_type) == (PNG, "image/png")
    (_, headers), = [(path, headers) for path, headers in feed_server.requests if path == "/t.png"]
    assert headers["Referer"] == f"{feed_server.base}{encoded}"


def test_a_picture_at_a_non_ascii_address_is_fetched_at_its_uri(http, feed_server):
    """Issue 19: og:image is written as the site writes links, /images/東京.jpg; the server has it at the
    percent-encoded path, and the card (and the editor) get that address, not the IRI."""
    encoded = "/images/%E6%9D%B1%E4%BA%AC.jpg"
    feed_server.serve(encoded, JPEG, **{"Content-Type": "image/jpeg"})
    url = feed_server.serve("/story", page('<meta property="og:image" content="/images/東京.jpg">'), **HTML)

    card = preflight(http, url)

    assert (card.image_url, card.image, card.image_type) == (feed_server.base + encoded, JPEG, "image/jpeg")
    assert requested(feed_server, encoded)


def test_a_picture_on_an_idn_host_with_a_non_ascii_query_is_fetched_as_a_uri(http, feed_server):
    """A host written in full-width letters (IDNA maps them; httpx alone refuses the address) and a query
    in Chinese: fetched by the same IRI → URI conversion as story links."""
    port = feed_server.base.rsplit(":", 1)[1]
    encoded = "/images/%E6%9D%B1%E4%BA%AC.jpg?w=%E5%8C%97%E4%BA%AC"
    feed_server.serve(encoded, JPEG, **{"Content-Type": "image/jpeg"})
    url = feed_server.serve("/story", page(
        f'<meta property="og:image" content="http://ｌｏｃａｌｈｏｓｔ:{port}/images/東京.jpg?w=北京">'), **HTML)

    card = preflight(http, url)

    assert (card.image_url, card.image) == (f"http://localhost:{port}{encoded}", JPEG)


def test_a_story_stored_with_an_iri_gets_a_card_whose_address_is_a_uri(http, feed_server):
    encoded = "/2026/05/%E6%9D%B1%E4%BA%AC/?q=%E5%8C%97%E4%BA%AC"
    feed_server.serve(encoded, page('<meta property="og:title" content="Tokyo">'), **HTML)

    card = preflight(http, f"{feed_server.base}/2026/05/東京/?q=北京")

    assert (card.url, card.title) == (feed_server.base + encoded, "Tokyo")
