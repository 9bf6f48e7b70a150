"""The social commands end to end: accounts added and tested against Mastodon.py talking to `responses`,
the queue read, a teaser previewed, edited, scheduled, held and cancelled, and the kill switch."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
import responses
from click.testing import CliRunner

from conftest import configured
from syndicate import tasks
from syndicate.cli.main import main
from syndicate.config import Settings
from syndicate.errors import InvalidInput

INSTANCE = "https://social.example"


@pytest.fixture
def syndicate(tmp_path, feed_server, sample_feed):
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
           "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1", "SYNDICATE_BASE_URL": "https://news.example",
           "SYNDICATE_ACCOUNT_ACCESS_TOKEN": "masto-secret-token"}
    runner = CliRunner()

    def run(*args: str, ok: bool = True):
        result = runner.invoke(main, list(args), env=env)
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    run("db", "upgrade")
    run("feed", "add", feed_server.serve("/feed/", sample_feed, **{"Content-Type": "application/rss+xml"}))
    run.env = env
    return run


def worker_tick(env: dict[str, str], ticks: int = 1) -> None:
    """What the worker's beat does, in this process: the social tick, its publishing tasks run inline."""
    configured(Settings.from_env(env), eager=True)
    for _ in range(ticks):
        tasks.social_tick()


def test_an_editor_connects_an_account_and_manages_its_queue(syndicate, tmp_path):
    added = syndicate("account", "add", "newsroom", "--network", "mastodon", "--instance", INSTANCE,
                      "--timezone", "Europe/Berlin", "--window", "always", "--min-gap", "15m", "--max-age", "0",
                      "--hashtag", "World News=World").output
    assert "added (mastodon, live)" in added
    shown = syndicate("account", "show", "newsroom", "--json").output
    assert "masto-secret-token" not in shown  # stored encrypted, never shown
    assert json.loads(shown)["settings"]["min_gap"] == 900
    assert "masto-secret-token" not in (tmp_path / "data" / "syndicate.db").read_bytes().decode("latin-1")

    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, f"{INSTANCE}/api/v1/accounts/verify_credentials", json={"acct": "newsroom", "id": "1"})
        rsps.add(responses.GET, f"{INSTANCE}/api/v2/instance/",
                 json={"configuration": {"statuses": {"max_characters": 1000, "characters_reserved_per_url": 23},
                                         "media_attachments": {"image_size_limit": 10_485_760}}})
        tested = syndicate("account", "test", "newsroom").output
    assert "newsroom: OK" in tested and "@newsroom" in tested
    settings = json.loads(syndicate("account", "show", "newsroom", "--json").output)["settings"]
    assert settings["max_characters"] == 1000
    assert (settings["max_image_bytes"], settings["max_image_pixels"]) == (10_485_760, None)  # the picture limit

    syndicate("feed", "poll", "--all")
    syndicate("account", "add", "late", "--network", "x", "--dry-run")  # connected after: plans nothing old
    syndicate("feed", "poll", "--all")  # plans again: nothing new
    queue = json.loads(syndicate("post", "list", "--json").output)
    assert {p["account"] for p in queue} == {"newsroom"} and len(queue) == 4
    assert all(p["status"] == "pending" and p["planned_at"] and p["length"] <= 1000 for p in queue)
    gaps = sorted(p["planned_at"] for p in queue)
    assert gaps[1] > gaps[0]  # one per 15 minutes, not all at once

    article = queue[0]["article_id"]
    preview = syndicate("post", "preview", str(article), "--network", "bluesky", "--json").output
    assert json.loads(preview)["limit"] == 300

    post_id = str(queue[0]["id"])
    too_long = syndicate("post", "edit", post_id, "--text", "word " * 300 + queue[0]["url"], ok=False)
    assert isinstance(too_long.exception, InvalidInput) and "of 1000 characters" in str(too_long.exception)
    edited = syndicate("post", "edit", post_id, "--text", f"Read this one. {queue[0]['url']}").output
    assert "teaser replaced" in edited
    assert "scheduled for 2031-01-01T08:00:00+01:00" in syndicate("post", "schedule", post_id, "--at",
                                                                  "2031-01-01 08:00").output
    assert "held" in syndicate("post", "hold", post_id).output
    assert "pending" in syndicate("post", "release", post_id).output
    assert "cancelled" in syndicate("post", "cancel", post_id).output
    refused = syndicate("post", "hold", post_id, ok=False)
    assert "only a waiting" in str(refused.exception)

    assert "paused: election night" in syndicate("social", "pause", "--reason", "election night").output
    status = json.loads(syndicate("social", "status", "--json").output)
    assert status["posting"] == "paused" and status["reason"] == "election night"
    assert {a["name"]: a["waiting"] for a in status["accounts"]} == {"newsroom": 3, "late": 0}
    assert "resumed" in syndicate("social", "resume").output
    assert json.loads(syndicate("social", "status", "--json").output)["posting"] == "on"


def test_a_failed_account_test_says_what_is_wrong_and_exits_1(syndicate):
    syndicate("account", "add", "newsroom", "--network", "mastodon", "--instance", INSTANCE)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, f"{INSTANCE}/api/v1/accounts/verify_credentials", status=401,
                 json={"error": "The access token is invalid"})
        result = syndicate("account", "test", "newsroom", ok=False)
    assert result.exit_code == 1
    assert "NOT OK" in result.output and "token" in result.output.lower()


@pytest.mark.parametrize("args, words", [
    (["--network", "mastodon", "--window", "7-22"], "07:00-22:00"),
    (["--network", "mastodon", "--timezone", "Berlin"], "IANA"),
    (["--network", "mastodon"], "needs its instance"),
    (["--network", "x", "--min-gap", "soon"], "10m"),
])
def test_bad_account_settings_are_refused_with_what_to_write(syndicate, args, words):
    result = syndicate("account", "add", "newsroom", *args, ok=False)
    assert result.exit_code != 0
    assert words in str(result.exception) + result.output
    assert "(none)" in syndicate("account", "list").output


HARD_STORIES = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Hard stories</title><link>https://news.example/</link>
<item><title></title><link>https://news.example/2026/05/ferries</link><guid>https://news.example/?p=1</guid>
  <description>Ferries resume at dawn, @harbourmaster told @crew@social.example on Monday. More later.</description>
  <category>Food &amp;amp; Drink</category><category>C++</category><category>Local News</category></item>
<item><title>{word}</title><link>https://news.example/2026/05/word</link><guid>https://news.example/?p=2</guid>
  <description>Short.</description></item>
<item><title>Harbour reopens after the storm</title><link>https://news.example/2026/05/harbour</link>
  <category>World News</category><description><![CDATA[<p>World News</p><p>Harbour reopens after the storm</p>
  <p>By Jane Doe, Senior Correspondent | May 5, 2026</p><p>WASHINGTON (AP) — Crews cleared the quay overnight.
  Source link I'm Jane, the author behind Harbour News Hub. Leave a Reply</p>]]></description></item>
</channel></rss>
""".format(word="Donaudampfschifffahrtsgesellschaftskapitän" * 13)  # 546 letters: over every limit


def test_hard_stories_make_teasers_a_follower_can_read(syndicate, feed_server):
    """Through `syndicate feed poll`: an untitled story with @handles in its lead and a feed's entity left
    in a category, a one-word headline longer than any network takes, and a story whose page puts its
    section, headline, byline and dateline above it and runs its furniture into it."""
    syndicate("feed", "add", feed_server.serve("/hard/", HARD_STORIES.encode()))
    for network in ("x", "mastodon", "bluesky"):
        syndicate("account", "add", f"desk-{network}", "--network", network, "--dry-run", "--window", "always",
                  *(["--instance", INSTANCE] if network == "mastodon" else []),
                  *(["--handle", "news.example"] if network == "bluesky" else []))
    syndicate("feed", "poll", "--all")
    queue = json.loads(syndicate("post", "list", "--json").output)
    hard = [p for p in queue if "news.example/2026/05/" in p["url"]]
    assert len(hard) == 9 and all(p["status"] == "pending" for p in hard)
    for post in hard:
        text = post["text"]
        assert not text.startswith(("http", "news.example")) and "(untitled)" not in text  # never the link alone
        assert "@harbourmaster" not in text and "@crew" not in text  # a handle quoted, nobody notified
        assert "#FoodAmpDrink" not in text and "#C " not in text and not text.rstrip().endswith("#C")
        if "ferries" in post["url"]:
            assert text.startswith("Ferries resume at dawn, @\u200dharbourmaster told")
        elif "harbour" in post["url"]:  # the page's section, headline, byline, dateline and furniture left out
            assert "Crews cleared the quay overnight." in text and "WASHINGTON" not in text
            assert not any(word in text for word in ("Jane", "Source link", "World News", "Reply")), text
        else:
            assert text.startswith("Donaudampfschifffahrtsgesellschaftskapitän") and "…" in text


LINKS_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:feedburner="http://rssnamespace.org/feedburner/ext/1.0"><channel>
<title>Links</title><link>https://news.example/</link>
<item><title>Linked to the feed</title><link>{feed}</link><guid>https://news.example/2026/05/permalink</guid></item>
<item><title>Linked to the home page</title><link>https://news.example/</link>
  <feedburner:origLink>https://news.example/2026/05/origlink</feedburner:origLink></item>
<item><title>No link at all</title><guid isPermaLink="false">urn:uuid:5f1c</guid></item>
<item><title>A script for a link</title><link>javascript:alert(1)</link></item>
</channel></rss>
"""


def test_a_story_links_to_itself_or_to_nothing_never_to_its_feed(syndicate, feed_server):
    """Through `syndicate feed poll`: an item whose link is the feed or the home page posts its permalink
    guid or FeedBurner's origLink; one with no address of its own gets no teaser, and the editor sees why."""
    url = feed_server.base + "/links/"
    feed_server.serve("/links/", LINKS_FEED.format(feed=url).encode())
    added = syndicate("feed", "add", url).output
    syndicate("account", "add", "desk-x", "--network", "x", "--dry-run", "--window", "always")
    syndicate("feed", "poll", "--all")
    posts = json.loads(syndicate("post", "list", "--json").output)
    by_url = {p["url"].split("?")[0]: p for p in posts if p["status"] == "pending"}  # without the UTM
    assert set(by_url) >= {"https://news.example/2026/05/permalink", "https://news.example/2026/05/origlink"}
    assert not any(u == url or u in ("https://news.example/", "") for u in by_url)
    skipped = [p for p in posts if p["status"] == "skipped"]
    assert len(skipped) == 2 and all("no link of its own" in (p.get("error") or "") for p in skipped), skipped
    feeds = json.loads(syndicate("feed", "list", "--json").output)
    note = next(f for f in feeds if f["url"] == url)["last_error"]
    assert "4 item(s) had no web address of their own as a link" in note and "(and 1 more)" in note
    assert "'No link at all': it has no link to the story; no teaser is posted for it" in note
    assert "'Linked to the feed': its link is the feed's own address" in note and "its guid is used" in note
    assert "feed 1" in added or "feed" in added


def test_a_feed_note_names_an_item_by_a_short_title(syndicate, feed_server):
    """A 5,000-character headline whose link is the feed: the note names it in 80 characters, not 5,000."""
    url = feed_server.base + "/long/"
    feed_server.serve("/long/", LINKS_FEED.replace("Linked to the feed", "Ω" * 5000).format(feed=url).encode())
    syndicate("feed", "add", url)
    syndicate("feed", "poll", "--all")
    note = next(f for f in json.loads(syndicate("feed", "list", "--json").output) if f["url"] == url)["last_error"]
    assert f"'{'Ω' * 79}…': its link is the feed's own address" in note and len(note) < 1200


CARD_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Cards</title><link>{base}/</link>
<item><title>Harbour reopens after the storm</title><link>{base}/2026/05/harbour/</link>
  <guid>{base}/?p=11</guid><description>Ferries resume at dawn on Monday. More later.</description></item>
<item><title>東京で猛暑対策</title><link>{base}/2026/05/東京-猛暑対策/</link>
  <guid>{base}/?p=12</guid><description>The city opens cooling shelters.</description></item>
</channel></rss>
"""
STORY_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title} – News</title>
<meta property="og:title" content="{title}"><meta property="og:description" content="{description}">
<meta property="og:image" content="/images/{image}.png"><meta name="twitter:card" content="summary_large_image">
</head><body><p>The story.</p></body></html>"""
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def serve_story(feed_server, path: str, title: str, image: str) -> None:
    html = STORY_PAGE.format(title=title, description=f"All about {title}.", image=image)
    feed_server.serve(path, html.encode(), **{"Content-Type": "text/html; charset=utf-8"})
    feed_server.serve(f"/images/{quote(image)}.png", PNG, **{"Content-Type": "image/png"})


def bluesky_records(outbox) -> dict[int, dict]:
    """The dry run's Bluesky requests by post id: what createRecord would have been sent."""
    found = {}
    for path in outbox.glob("syndicate-post-*.json"):
        written = json.loads(path.read_text(encoding="utf-8"))
        if written["network"] == "bluesky":
            found[int(path.stem.rsplit("-", 1)[1])] = written
    return found


def test_posts_planned_by_feed_poll_and_reshares_get_their_link_card(syndicate, feed_server, tmp_path):
    """Issue 19: posts planned by `syndicate feed poll` (no worker) and re-shares never had their card
    checked, so Bluesky got no embed. The article pages, served by the same local server as the feed,
    carry og: tags; one lives at a non-ASCII path."""
    base = feed_server.base
    serve_story(feed_server, "/2026/05/harbour/", "Harbour reopens after the storm", "harbour")
    serve_story(feed_server, "/2026/05/%E6%9D%B1%E4%BA%AC-%E7%8C%9B%E6%9A%91%E5%AF%BE%E7%AD%96/", "東京で猛暑対策",
                "東京")
    syndicate("feed", "add", feed_server.serve("/cards/", CARD_FEED.format(base=base).encode()))
    syndicate("account", "add", "desk-bluesky", "--network", "bluesky", "--dry-run", "--handle", "news.example",
              "--window", "always", "--min-gap", "0", "--max-age", "0")

    syndicate("feed", "poll", "--all")

    queue = json.loads(syndicate("post", "list", "--json").output)
    ours = {p["article_id"]: p for p in queue if p["url"].startswith(base + "/2026/05/")}
    assert len(ours) == 2
    for post in ours.values():  # checked by `feed poll` itself: an editor sees the card before any worker runs
        assert post["card"]["title"] in ("Harbour reopens after the storm", "東京で猛暑対策"), post
        assert post["card"]["image_url"].startswith(base + "/images/") and post["card"]["image_url"].isascii()
    harbour = next(a for a, p in ours.items() if "harbour" in p["url"])
    reshared = syndicate("post", "reshare", str(harbour), "--account", "desk-bluesky").output
    reshare_id = int(reshared.split()[1].rstrip(":"))

    worker_tick(syndicate.env, ticks=8)  # one post per tick: the sample feed's four, ours, the re-share

    records = bluesky_records(tmp_path / "data" / "outbox" / "posts")
    for post_id in [p["id"] for p in ours.values()] + [reshare_id]:
        record = records[post_id]["request"]["json"]["record"]
        external = record["embed"]["external"]
        assert record["embed"]["$type"] == "app.bsky.embed.external", record
        assert external["title"] in ("Harbour reopens after the storm", "東京で猛暑対策")
        # the card opens what the teaser links to: the story's URI with the account's UTM
        link = next(f["features"][0]["uri"] for f in record["facets"] if "uri" in f["features"][0])
        assert external["uri"] == link and "utm_source=bluesky&utm_medium=social" in link, record
        assert external["uri"].startswith(base + "/2026/05/") and external["uri"].isascii()
        assert records[post_id]["upload"]["bytes"] == len(PNG)  # its picture, as the thumb
    pages = [path for path, _ in feed_server.requests if path == "/2026/05/harbour/"]
    # Read once when `feed poll` planned it, once for the re-share's check, once per post for the thumb.
    assert len(pages) == 1 + 1 + 2


LANGUAGES_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>Languages</title>
<link>https://news.example/</link><language>en-GB</language>
<item><title>Ferries resume at dawn after the storm</title><link>https://news.example/l/en</link>
  <description>Crews cleared the quay overnight and the first boat left at six.</description></item>
<item><title>Der Hafen öffnet nach dem Sturm wieder</title><link>https://news.example/l/de</link>
  <description>Die Fähren fahren seit heute Morgen wieder nach Fahrplan.</description></item>
<item><title>東京で猛暑対策</title><link>https://news.example/l/ja</link>
  <description>東京都は月曜日に900か所の避暑施設を開設した。</description></item>
<item><title>Harbour</title><link>https://news.example/l/short</link></item>
<item><title>Portos reabrem</title><link>https://news.example/l/pt</link><dc:language>pt-BR</dc:language></item>
</channel></rss>
"""


def test_each_post_says_the_language_its_story_is_in(syndicate, feed_server, tmp_path):
    """Through `syndicate feed poll` and the tick, into the dry run's requests: read off the story's words
    (with the feed's region when they agree), else as the item or the feed declares it."""
    syndicate("feed", "add", feed_server.serve("/languages/", LANGUAGES_FEED.encode()))
    syndicate("account", "add", "desk-bluesky", "--network", "bluesky", "--dry-run", "--handle", "news.example",
              "--window", "always", "--min-gap", "0", "--max-age", "0", "--language", "fr")
    syndicate("account", "add", "desk-mastodon", "--network", "mastodon", "--dry-run", "--instance", INSTANCE,
              "--window", "always", "--min-gap", "0", "--max-age", "0", "--language", "fr")
    syndicate("feed", "poll", "--all")
    articles = json.loads(syndicate("article", "list", "--json").output)
    stored = {a["url"].rsplit("/", 1)[1]: a["language"] for a in articles if "/l/" in a["url"]}
    assert stored == {"en": "en-GB", "de": "de", "ja": "ja", "short": "en-GB", "pt": "pt-BR"}  # what editors see
    worker_tick(syndicate.env, ticks=12)

    posts = {p["id"]: p for p in json.loads(syndicate("post", "list", "--json", "--limit", "100").output)}
    sent = {}
    for path in (tmp_path / "data" / "outbox" / "posts").glob("syndicate-post-*.json"):
        written = json.loads(path.read_text(encoding="utf-8"))
        url = posts[int(path.stem.rsplit("-", 1)[1])]["url"].split("?")[0]
        if "/l/" in url:
            request = written["request"]
            found = (request["json"]["record"].get("langs") if written["network"] == "bluesky"
                     else request["form"].get("language"))
            sent[(written["network"], url.rsplit("/", 1)[1])] = found
    assert sent == {
        ("bluesky", "en"): ["en-GB"], ("mastodon", "en"): "en",  # Mastodon takes the language, not the region
        ("bluesky", "de"): ["de"], ("mastodon", "de"): "de",  # its words outweigh the feed's en-GB
        ("bluesky", "ja"): ["ja"], ("mastodon", "ja"): "ja",
        ("bluesky", "short"): ["en-GB"], ("mastodon", "short"): "en",  # one word says nothing: the feed's
        ("bluesky", "pt"): ["pt-BR"], ("mastodon", "pt"): "pt",  # two words: the item's own dc:language
    }


SPONSORED_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Sponsored</title><link>https://news.example/</link>
<item><title>Win a cruise with our partner</title><link>https://news.example/s/cruise</link>
  <category>Sponsored</category><description>Book now.</description></item>
<item><title>Ferries resume at dawn</title><link>https://news.example/s/ferries</link>
  <category>Local</category><description>Crews cleared the quay.</description></item>
</channel></rss>
"""


def test_an_account_leaves_out_the_categories_its_editor_excludes(syndicate, feed_server):
    """A "Sponsored" story goes to Mastodon but not to X, and X's queue says why; a re-share is the editor's
    explicit act and posts it all the same; the setting can be cleared."""
    syndicate("feed", "add", feed_server.serve("/sponsored/", SPONSORED_FEED.encode()))
    syndicate("account", "add", "desk-x", "--network", "x", "--dry-run", "--skip-category", "sponsored",
              "--skip-category", "Ads")
    syndicate("account", "add", "desk-mastodon", "--network", "mastodon", "--dry-run", "--instance", INSTANCE)
    shown = json.loads(syndicate("account", "show", "desk-x", "--json").output)
    assert shown["settings"]["skip_categories"] == ["sponsored", "Ads"]

    syndicate("feed", "poll", "--all")

    articles = {a["id"]: a for a in json.loads(syndicate("article", "list", "--json").output)}
    ours = [p for p in json.loads(syndicate("post", "list", "--json", "--limit", "100").output)
            if "/s/" in articles[p["article_id"]]["url"]]
    status = {(p["account"], articles[p["article_id"]]["title"]): p["status"] for p in ours}
    cruise, ferries = "Win a cruise with our partner", "Ferries resume at dawn"
    assert status == {("desk-x", cruise): "skipped", ("desk-x", ferries): "pending",
                      ("desk-mastodon", cruise): "pending", ("desk-mastodon", ferries): "pending"}
    [skipped] = [p for p in ours if p["status"] == "skipped"]
    assert "filed under 'Sponsored', which this account leaves out" in skipped["error"]

    syndicate("post", "reshare", str(skipped["article_id"]), "--account", "desk-x")
    again = [p for p in json.loads(syndicate("post", "list", "--json", "--limit", "100").output)
             if p["article_id"] == skipped["article_id"] and p["account"] == "desk-x"]
    assert sorted(p["status"] for p in again) == ["pending", "skipped"]
    syndicate("account", "edit", "desk-x", "--skip-category", "")
    assert json.loads(syndicate("account", "show", "desk-x", "--json").output)["settings"]["skip_categories"] == []


WORDLESS_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Wordless</title><link>https://news.example/</link>
<item><title> </title><link>https://news.example/w/nothing</link><description></description></item>
<item><title>Ferries resume at dawn</title><link>https://news.example/w/ferries</link>
  <description>Crews cleared the quay.</description></item>
</channel></rss>
"""


def test_a_story_with_no_words_gets_no_teaser_rather_than_the_bare_link(syndicate, feed_server):
    """Tried as a stranger would: an item with a blank headline and no text, then a good one. The first is
    skipped with why, never posted as its link alone; the second goes as usual."""
    syndicate("feed", "add", feed_server.serve("/wordless/", WORDLESS_FEED.encode()))
    syndicate("account", "add", "desk-x", "--network", "x", "--dry-run")
    syndicate("feed", "poll", "--all")

    articles = {a["id"]: a["url"] for a in json.loads(syndicate("article", "list", "--json").output)}
    posts = {articles[p["article_id"]].rsplit("/", 1)[1]: p
             for p in json.loads(syndicate("post", "list", "--json", "--limit", "100").output)
             if "/w/" in articles[p["article_id"]]}
    assert posts["nothing"]["status"] == "skipped" and "its teaser would be the bare link" in posts["nothing"]["error"]
    assert posts["ferries"]["status"] == "pending" and posts["ferries"]["text"].startswith("Ferries resume at dawn")
