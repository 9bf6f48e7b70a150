"""Issue 19's closing count: a feed of hard but ordinary stories, polled by `syndicate feed poll`, posted by the
tick to X, Mastodon and Bluesky in dry run, and every request the networks would get checked for each fault a
follower would see — by checks written here, not by the code that composes the teasers. The count per network
is printed (`pytest -s`) and must be zero.

The stories: a non-Latin headline and address, emoji made of joiners and tags, @handles in a lead, a page's
section label, headline, byline, dateline and furniture around the story, an untitled item, a one-word headline
longer than any network takes, entities and symbols in categories, an item linked to its feed or its home page,
a German story in an English feed, a long link quoted in a lead, and a Sponsored story an account leaves out.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from urllib.parse import quote, urlsplit

import pytest
import regex
from click.testing import CliRunner
from twitter_text import parse_tweet

from conftest import configured
from syndicate import tasks
from syndicate.cli.main import main
from syndicate.config import Settings

FAMILY, SCOTLAND = "👩\u200d👩\u200d👧\u200d👦", "🏴\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"
LONG_WORD = "Donaudampfschifffahrtsgesellschaftskapitän" * 13
FURNITURE = ("Source link", "Leave a Reply", "author behind", "By Jane", "WASHINGTON", "World News",
             "Advertisement", "(untitled)")
# The networks' own mention patterns (twitter-text's validMentionOrList, Mastodon's Account::MENTION_RE).
X_MENTION = regex.compile(r"(?:^|[^a-zA-Z0-9_!#$%&*@＠]|(?:^|[^a-zA-Z0-9_+~.-])(?:rt|RT):?)[@＠][a-zA-Z0-9_]{1,20}")
MASTODON_MENTION = regex.compile(r"(?<![=/\w])@[a-z0-9_]+(?:[.-]+[a-z0-9_]+)*(?:@[\w]+(?:[.-]+\w+)*)?", regex.I)
URL_IN_TEXT = regex.compile(r"https?://\S+")


def stories(base: str, feed_url: str) -> list[dict]:
    """Each hard story: what the feed says, and what a follower must see of it."""
    tokyo = "/2026/05/東京-猛暑対策/"
    return [
        dict(slug="tokyo", title="東京で猛暑対策 🌡️", link=f"{base}{tokyo}?q=北京",
             story=f"{base}{quote(tokyo)}?q={quote('北京')}", language="ja",
             html="<p>東京都は月曜日に900か所の避暑施設を開設した。高齢者には無料で送迎する。</p>"),
        dict(slug="family", title=f"Family day {FAMILY} at the {SCOTLAND} games", language="en",
             html="<p>Thousands of families came to the park on Sunday. The games ran until dusk.</p>"),
        dict(slug="mentions", title="Harbour row: the council answers", language="en",
             html="<p>Ferries resume at dawn, @harbourmaster told @crew@social.example on Monday. More later.</p>"),
        dict(slug="furniture", title="Harbour reopens after the storm", categories=["World News"], language="en",
             html="<p>World News</p><p>Harbour reopens after the storm</p>"
                  "<p>By Jane Doe, Senior Correspondent | May 5, 2026</p>"
                  "<p>WASHINGTON (AP) — Crews cleared the quay overnight. Advertisement The first boat left at six. "
                  "Source link I'm Jane, the author behind Harbour News Hub.</p><p>Leave a Reply</p>"),
        dict(slug="untitled", title="", language="en",
             html="<p>Council approves the new bridge across the river after a long debate. Work starts in May.</p>"),
        dict(slug="longword", title=LONG_WORD, html="<p>Short.</p>"),
        dict(slug="hashtags", title="A menu for the harbour festival", language="en",
             categories=["Food &amp;amp; Drink", "C++", "#", "Ω", "世界", "Local News"],
             html="<p>The harbour festival opens with a new menu on Friday evening. Chefs cook on the quay.</p>"),
        dict(slug="feedlink", title="Linked to its feed", link=feed_url, guid=f"{base}/2026/05/feedlink/",
             story=f"{base}/2026/05/feedlink/", language="en",
             html="<p>The item's link is the feed, but its guid is the story's permalink.</p>"),
        dict(slug="origlink", title="Linked to the home page", link=f"{base}/", orig=f"{base}/2026/05/origlink/",
             story=f"{base}/2026/05/origlink/", language="en",
             html="<p>The item's link is the home page, and FeedBurner kept the story's own address.</p>"),
        dict(slug="german", title="Der Hafen öffnet nach dem Sturm wieder", language="de",
             html="<p>Die Fähren fahren seit heute Morgen wieder nach Fahrplan. Die Stadt ist erleichtert.</p>"),
        dict(slug="quoted-link", title="Where to read the harbour report", language="en",
             html="<p>The full report is at https://www.example.com/reports/2026/harbour-storm-damage-assessment-"
                  "final-version-with-appendices-and-maps.pdf and runs to 300 pages with maps of every quay.</p>"),
        dict(slug="sponsored", title="Win a cruise with our partner", categories=["Sponsored"], language="en",
             html="<p>Book a cruise on the new ferry this summer and win a weekend by the sea.</p>"),
    ]


def feed_xml(base: str, items: list[dict]) -> str:
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<rss version="2.0" '
           'xmlns:feedburner="http://rssnamespace.org/feedburner/ext/1.0"><channel>',
           f"<title>Hard stories</title><link>{base}/</link><language>en</language>"]
    for item in items:
        out.append("<item>")
        out.append(f"<title>{item['title']}</title><link>{item['link']}</link>")
        out.append(f"<guid>{item.get('guid') or item['link'] + '#guid'}</guid>")
        if item.get("orig"):
            out.append(f"<feedburner:origLink>{item['orig']}</feedburner:origLink>")
        out.extend(f"<category>{c}</category>" for c in item.get("categories", ()))
        out.append(f"<description><![CDATA[{item['html']}]]></description></item>")
    out.append("</channel></rss>")
    return "\n".join(out)


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<meta property="og:title" content="{title}"><meta property="og:description" content="The story.">
</head><body><p>The story.</p></body></html>"""


@pytest.fixture
def hard_feed(tmp_path, feed_server):
    base, feed_url = feed_server.base, feed_server.base + "/hard/"
    items = stories(base, feed_url)
    for item in items:
        item.setdefault("link", f"{base}/2026/05/{item['slug']}/")
        item.setdefault("story", item["link"])
        path = item["story"].removeprefix(base)
        feed_server.serve(path, PAGE.format(title=item["title"] or "Untitled").encode(),
                          **{"Content-Type": "text/html; charset=utf-8"})
    feed_server.serve("/hard/", feed_xml(base, items).encode())
    return feed_url, items


def syndicate_cli(tmp_path):
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
           "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1", "SYNDICATE_BASE_URL": "https://news.example"}
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(main, list(args), env=env)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.output

    run.env = env
    return run


def test_no_teaser_of_a_hard_feed_has_a_fault_a_follower_would_see(tmp_path, hard_feed, capsys):
    feed_url, items = hard_feed
    syndicate = syndicate_cli(tmp_path)
    syndicate("db", "upgrade")
    syndicate("feed", "add", feed_url)
    pace = ("--window", "always", "--min-gap", "0", "--max-age", "0", "--dry-run")
    syndicate("account", "add", "desk-x", "--network", "x", "--skip-category", "Sponsored", *pace)
    syndicate("account", "add", "desk-mastodon", "--network", "mastodon", "--instance", "https://social.example",
              *pace)
    syndicate("account", "add", "desk-bluesky", "--network", "bluesky", "--handle", "news.example", *pace)
    syndicate("feed", "poll", "--all")
    configured(Settings.from_env(syndicate.env), eager=True)
    for _ in range(len(items) + 2):  # one post per account per tick
        tasks.social_tick()

    articles = {a["id"]: a for a in json.loads(syndicate("article", "list", "--json", "--limit", "100"))}
    posts = {p["id"]: p for p in json.loads(syndicate("post", "list", "--json", "--limit", "200"))}
    by_story = {item["story"]: item for item in items}
    sent: dict[tuple[str, str], dict] = {}
    for path in (tmp_path / "data" / "outbox" / "posts").glob("syndicate-post-*.json"):
        written = json.loads(path.read_text(encoding="utf-8"))
        post = posts[int(path.stem.rsplit("-", 1)[1])]
        item = by_story[articles[post["article_id"]]["url"]]
        sent[(written["network"], item["slug"])] = written

    faults: dict[str, Counter] = {network: Counter() for network in ("x", "mastodon", "bluesky")}
    for item in items:
        for network in faults:
            if network == "x" and item["slug"] == "sponsored":
                assert (network, item["slug"]) not in sent, "a Sponsored story went to an account that skips it"
                continue
            written = sent.get((network, item["slug"]))
            if written is None:
                faults[network]["never posted"] += 1
                continue
            for fault in faults_of(network, written, item):
                faults[network][f"{item['slug']}: {fault}"] += 1

    with capsys.disabled():
        print(f"\nhard feed: {len(items)} stories; teasers with a fault, per network:")
        for network, counted in faults.items():
            print(f"  {network:9} {sum(counted.values())} {dict(counted) or ''}")
    assert all(not counted for counted in faults.values()), faults


def faults_of(network: str, written: dict, item: dict) -> list[str]:
    """Every fault a follower would see in one network's request for one story."""
    request = written["request"]
    if network == "x":
        text, link = request["json"]["text"], URL_IN_TEXT.findall(request["json"]["text"])[-1]
    elif network == "mastodon":
        text, link = request["form"]["status"], URL_IN_TEXT.findall(request["form"]["status"])[-1]
    else:
        record = request["json"]["record"]
        text = record["text"]
        # the teaser's own link is its last link facet: a link quoted in the lead comes before it
        link = [f["features"][0]["uri"] for f in record.get("facets") or () if "uri" in f["features"][0]][-1]
    found = []
    without_utm = regex.sub(r"[?&]utm_[^&]*", "", link)
    without_utm = without_utm if "?" in without_utm or "&" not in without_utm else without_utm.replace("&", "?", 1)
    if not link.isascii() or without_utm != item["story"]:
        found.append("link not the story's URI")
    if "utm_source=" + network not in link:
        found.append("link without its UTM")
    host = urlsplit(link).netloc
    words = " ".join(word for word in text.split() if "://" not in word and host not in word
                     and not word.startswith("#"))
    if len(regex.findall(r"\p{L}", words)) < 3:
        found.append("nothing but a link")
    if any(bit in text for bit in FURNITURE):
        found.append("furniture or a placeholder")
    if X_MENTION.search(text) or MASTODON_MENTION.search(text):
        found.append("a live mention")
    if FAMILY in item["title"] and (FAMILY not in text or SCOTLAND not in text):
        found.append("emoji taken apart")
    if unicodedata.normalize("NFC", text) != text:
        found.append("not NFC")
    for tag in regex.findall(r"#(\S+)", text):
        if len(tag) < 2 or "Amp" in tag or not regex.search(r"\p{L}", tag):
            found.append(f"a bad hashtag #{tag}")
    if "…" in text and regex.search(r"https?://\S*…", text):
        found.append("a cut link")
    if item["slug"] == "quoted-link" and "https://www.example.com/reports/" in text and \
            "appendices-and-maps.pdf" not in text:
        found.append("a cut link")
    if not fits(network, text):
        found.append("too long by the network's count")
    language = (record.get("langs") or [None])[0] if network == "bluesky" else \
        (request["form"].get("language") if network == "mastodon" else item.get("language"))
    if network != "x" and item.get("language") and (language or "").split("-")[0] != item["language"]:
        found.append(f"language {language!r}, not {item['language']!r}")
    if network == "bluesky":
        embed = (record.get("embed") or {}).get("external") or {}
        if embed.get("uri") != link:
            found.append("no link card, or one that opens another address")
    return found


def fits(network: str, text: str) -> bool:
    """Each network's own count, written out here: X's weighted length (twitter-text), Mastodon's graphemes
    with each link at 23, Bluesky's 300 graphemes and 3,000 bytes."""
    graphemes = len(regex.findall(r"\X", text))
    if network == "x":
        return parse_tweet(text).weightedLength <= 280
    if network == "mastodon":
        links = URL_IN_TEXT.findall(text)
        return graphemes - sum(len(link) for link in links) + 23 * len(links) <= 500
    return graphemes <= 300 and len(text.encode()) <= 3000
