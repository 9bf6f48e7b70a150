"""`syndicate feed import FILE.opml` and `feed export`: the lists feed readers write, read at any depth;
hostile XML refused whole; bad addresses and repeats named by line; a round trip that changes nothing."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from syndicate.cli.main import main
from syndicate.ingest import opml

# Exports as the readers write them (their shapes: Feedly 1.0 in folders, Inoreader nested two deep, NetNewsWire 1.1)
SAMPLES = Path(__file__).parent / "opml"

FEEDLY = (SAMPLES / "feedly.opml").read_text(encoding="utf-8")
INOREADER = (SAMPLES / "inoreader.opml").read_text(encoding="utf-8")
NETNEWSWIRE = (SAMPLES / "netnewswire.opml").read_text(encoding="utf-8")


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
            "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1", "SYNDICATE_FEED_TIMEOUT": "5"}


@pytest.fixture
def syndicate(env):
    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None):
        return runner.invoke(main, list(args), env=env, input=input)

    assert run("db", "upgrade").exit_code == 0
    return run


def listed(syndicate) -> dict[str, str]:
    return {f["url"]: f for f in json.loads(syndicate("feed", "list", "--json").output)}


@pytest.mark.parametrize("exported, urls", [
    (FEEDLY, {"https://feeds.arstechnica.com/arstechnica/index", "https://www.theverge.com/rss/index.xml",
              "https://www.tagesschau.de/xml/rss2/"}),
    (INOREADER, {"https://feeds.bbci.co.uk/news/world/rss.xml", "https://www.lemonde.fr/rss/une.xml",
                 "https://news.ycombinator.com/rss"}),
    (NETNEWSWIRE, {"https://daringfireball.net/feeds/main", "https://netnewswire.blog/feed.xml"}),
], ids=["feedly", "inoreader", "netnewswire"])
def test_a_readers_export_adds_every_feed_in_every_folder(syndicate, exported, urls):
    result = syndicate("feed", "import", "-", input=exported.encode())

    assert result.exit_code == 0, result.output
    assert set(listed(syndicate)) == urls
    assert result.output.startswith(f"{len(urls)} added")


def test_a_repeat_and_a_bad_address_are_named_by_line_and_the_rest_is_added(syndicate):
    data = FEEDLY.replace("https://www.theverge.com/rss/index.xml", "javascript:alert(1)")

    result = syndicate("feed", "import", "-", input=data.encode())

    assert result.exit_code == 1
    assert "2 added, 1 known already, 1 refused" in result.output
    assert "line 9: javascript:alert(1): 'javascript:alert(1)' is not a web address we can fetch" in result.output
    assert "line 13: https://feeds.arstechnica.com/arstechnica/index: repeats line 8" in result.output
    again = syndicate("feed", "import", "-", input=FEEDLY.encode())
    assert "1 added, 3 known already, 0 refused" in again.output and "added already (feed 1)" in again.output


def test_the_outline_title_names_the_feed_until_its_first_poll(syndicate):
    syndicate("feed", "import", "-", input=INOREADER.encode())

    assert listed(syndicate)["https://www.lemonde.fr/rss/une.xml"]["url"]  # listed…
    exported = ET.fromstring(syndicate("feed", "export").output)
    titles = {o.get("xmlUrl"): o.get("title") for o in exported.iter("outline")}
    assert titles["https://www.lemonde.fr/rss/une.xml"] == \
        "Le Monde.fr - Actualités et Infos en France et dans le monde"


def test_an_export_is_opml_2_that_imports_back_into_the_same_feeds(syndicate, tmp_path, env):
    syndicate("feed", "import", "-", input=FEEDLY.encode())
    syndicate("feed", "import", "-", input=NETNEWSWIRE.encode())
    path = tmp_path / "feeds.opml"

    result = syndicate("feed", "export", str(path))

    assert "5 feeds written to" in result.output
    root = ET.parse(path).getroot()
    assert root.tag == "opml" and root.get("version") == "2.0"
    assert root.find("head/title").text and root.find("head/dateCreated").text
    outlines = root.findall("body/outline")
    assert len(outlines) == 5 and all(o.get("type") == "rss" and o.get("text") for o in outlines)
    elsewhere = CliRunner()
    other = {**env, "SYNDICATE_DATA_DIR": str(tmp_path / "other")}
    elsewhere.invoke(main, ["db", "upgrade"], env=other)
    back = elsewhere.invoke(main, ["feed", "import", str(path)], env=other)
    assert back.output.startswith("5 added, 0 known already, 0 refused")
    again = elsewhere.invoke(main, ["feed", "export"], env=other).output
    assert [o.get("xmlUrl") for o in ET.fromstring(again).iter("outline")] == [o.get("xmlUrl") for o in outlines]


def test_a_title_with_quotes_markup_and_control_characters_exports_as_well_formed_xml(syndicate, svc):
    from syndicate.db import transaction
    from syndicate.ingest import feeds

    with transaction(svc.Session) as session:
        feeds.add_feed(session, "https://example.com/feed").title = 'A "quoted" <b>&</b>\x0b\x1b title'
    out = io.StringIO()
    with transaction(svc.Session) as session:
        opml.export_opml(session, out)

    outline = ET.fromstring(out.getvalue()).find("body/outline")
    assert outline.get("title") == 'A "quoted" <b>&</b> title'


XXE = """<?xml version="1.0"?>
<!DOCTYPE opml [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<opml version="2.0"><head><title>&secret;</title></head><body>
<outline text="x" xmlUrl="https://example.com/feed"/></body></opml>"""

LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<opml version="2.0"><body><outline text="&lol3;" xmlUrl="https://example.com/feed"/></body></opml>"""


@pytest.mark.parametrize("data, said", [
    (XXE, "declares a DTD or entities"),
    (LAUGHS, "declares a DTD or entities"),
    ("<opml><body><outline xmlUrl='https://example.com/a'></body>", "line 1 of the file isn't well-formed XML"),
    ("<rss version='2.0'><channel/></rss>", "this is XML but not OPML (its root is <rss>)"),
    ("<opml>" + " " * (opml.MAX_BYTES + 1) + "</opml>", "the file is over 5 MB"),
], ids=["xxe", "billion-laughs", "broken", "not-opml", "huge"])
def test_a_hostile_or_broken_file_is_refused_whole(syndicate, data, said):
    result = syndicate("feed", "import", "-", input=data.encode())

    assert result.exit_code != 0
    assert said in str(result.exception) and "nothing was imported" in str(result.exception)
    assert listed(syndicate) == {}


def test_check_fetches_each_feed_and_leaves_out_those_that_fail(syndicate, feed_server, sample_feed):
    good = feed_server.serve("/feed/", sample_feed)
    data = (f'<opml version="2.0"><body>\n<outline text="Good" xmlUrl="{good}"/>\n'
            f'<outline text="Gone" xmlUrl="{feed_server.base}/gone/"/>\n</body></opml>')

    result = syndicate("feed", "import", "-", "--check", input=data.encode())

    assert result.exit_code == 1
    assert "1 added, 0 known already, 1 refused" in result.output
    assert f"line 3: {feed_server.base}/gone/: " in result.output and "answers HTTP 404" in result.output
    assert set(listed(syndicate)) == {good}
