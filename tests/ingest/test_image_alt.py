"""A story's picture and what describes it, for the posts that carry it: the <img>'s alt, else the caption of
its <figure>, else Media RSS's words for it — read through `syndicate feed poll` from a real local server."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from conftest import cli_in
from syndicate.db import transaction
from syndicate.ingest import content, documents, feeds
from syndicate.models import Article, utcnow

LONG = "A crowd " * 300  # 2,400 characters: more than any network takes

IMAGES_FEED = f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"
     xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>
<title>Pictures</title><link>https://news.example/</link>
<item><title>Alt in the story</title><link>https://news.example/2026/05/alt</link>
  <content:encoded><![CDATA[<figure><img src="/img/ferry.jpg" alt="The ferry &amp; its crew
    at dawn"><figcaption>Not this caption</figcaption></figure><p>Ferries resume at dawn. More later.</p>]]>
  </content:encoded></item>
<item><title>Caption only</title><link>https://news.example/2026/05/caption</link>
  <content:encoded><![CDATA[<p>Intro.</p><figure><img src="https://cdn.example/bridge.png" alt="">
    <figcaption>The old <b>bridge</b>, closed since May.</figcaption></figure><p>The bridge stays shut.</p>]]>
  </content:encoded></item>
<item><title>Media RSS words</title><link>https://news.example/2026/05/media</link>
  <description>The council met on Monday. It voted for the plan.</description>
  <media:content url="https://cdn.example/council.jpg" medium="image">
    <media:title>Council chamber</media:title>
    <media:description>Councillors raise their hands in the vote</media:description>
  </media:content></item>
<item><title>A group's title</title><link>https://news.example/2026/05/group</link>
  <description>Rain all week. Bring a coat.</description>
  <media:group><media:title type="plain">Umbrellas on the high street</media:title>
    <media:thumbnail url="https://cdn.example/rain.jpg"/></media:group></item>
<item><title>Another picture in the story</title><link>https://news.example/2026/05/other</link>
  <description><![CDATA[<p><img src="https://cdn.example/ad.gif" alt="Buy now"> Markets rallied. Shares rose.</p>]]>
  </description>
  <media:content url="https://cdn.example/markets.jpg" medium="image"/></item>
<item><title>Too much to say</title><link>https://news.example/2026/05/long</link>
  <content:encoded><![CDATA[<img src="https://cdn.example/crowd.jpg" alt="{LONG}\u200b\u202e"><p>A crowd came.</p>]]>
  </content:encoded></item>
<item><title>No picture</title><link>https://news.example/2026/05/none</link>
  <description>Nothing to see.</description></item>
</channel></rss>
"""


@pytest.fixture
def syndicate(tmp_path):
    return cli_in({"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
                   "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1", "SYNDICATE_BASE_URL": "https://news.example"})


def test_feed_poll_stores_each_picture_with_the_words_that_describe_it(syndicate, feed_server):
    syndicate("db", "upgrade")
    syndicate("feed", "add", feed_server.serve("/pictures/", IMAGES_FEED.encode()))
    syndicate("feed", "poll", "--all")
    articles = {a["title"]: a for a in json.loads(syndicate("article", "list", "--json"))}

    def picture(title: str) -> tuple[str | None, str | None]:
        return articles[title]["image_url"], articles[title]["image_alt"]

    # The <img>'s own alt, in one line, wins over the caption of its figure.
    assert picture("Alt in the story") == ("https://news.example/img/ferry.jpg", "The ferry & its crew at dawn")
    # An empty alt: the figure's caption, as plain text.
    assert picture("Caption only") == ("https://cdn.example/bridge.png", "The old bridge, closed since May.")
    # Media RSS: the media:description of the media:content (not its title), and the story's lead is the
    # story's, although feedparser reads that media:description as the item's own.
    assert picture("Media RSS words") == ("https://cdn.example/council.jpg",
                                          "Councillors raise their hands in the vote")
    assert articles["Media RSS words"]["lead"] == "The council met on Monday. It voted for the plan."
    assert picture("A group's title") == ("https://cdn.example/rain.jpg", "Umbrellas on the high street")
    # Another picture's alt never describes the feed's picture.
    assert picture("Another picture in the story") == ("https://cdn.example/markets.jpg", None)
    url, alt = picture("Too much to say")
    assert len(alt) == documents.IMAGE_ALT_MAX and alt.endswith("…") and "\u202e" not in alt and "\n" not in alt
    assert picture("No picture") == (None, None)


def test_an_edit_that_changes_the_picture_changes_its_words_and_one_without_a_picture_keeps_both(svc):
    def store(html: str) -> tuple[str | None, str | None]:
        entry = documents.normalise(link="https://news.example/a", guid="a", title="A", html=html)
        with transaction(svc.Session) as session:
            feeds.store(session, None, [entry], utcnow())
            article = session.scalars(select(Article)).one()
            return article.image_url, article.image_alt

    assert store('<img src="https://cdn.example/1.jpg" alt="First"><p>One.</p>') == ("https://cdn.example/1.jpg",
                                                                                    "First")
    assert store('<img src="https://cdn.example/2.jpg"><p>Two.</p>') == ("https://cdn.example/2.jpg", None)
    assert store("<p>Three, without a picture.</p>") == ("https://cdn.example/2.jpg", None)
    assert store('<img src="https://cdn.example/2.jpg" alt="Second"><p>Four.</p>') == ("https://cdn.example/2.jpg",
                                                                                      "Second")
    assert store("<p>Five, without a picture.</p>") == ("https://cdn.example/2.jpg", "Second")


@pytest.mark.parametrize("html, src, alt", [
    ('<img src="a.jpg" alt="Alt">', "a.jpg", "Alt"),
    ('<figure><img src="a.jpg"><figcaption>Cap <i>tion</i></figcaption></figure>', "a.jpg", "Cap tion"),
    ('<figure><img src="a.jpg" alt=" "><figcaption>Cap</figcaption></figure>', "a.jpg", "Cap"),
    # a caption of another figure, or of none, says nothing of this picture
    ('<figure><img src="b.jpg"><figcaption>B</figcaption></figure><img src="a.jpg">', "a.jpg", ""),
    ('<figure><figcaption>Before</figcaption></figure><img src="a.jpg">', "a.jpg", ""),
    ('<img src="b.jpg" alt="B">', "a.jpg", ""),
    ("<p>No picture</p>", "a.jpg", ""),
])
def test_image_alt_reads_the_alt_then_the_caption_of_that_picture_only(html, src, alt):
    assert content.image_alt(html, src) == alt
