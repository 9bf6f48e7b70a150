"""A story's language: read off its words when they say it clearly, else as its feed declares it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from syndicate.ingest import documents, language
from syndicate.social import teaser
from syndicate.social.clients import mastodon
from syndicate.social.clients.base import PostRequest
from syndicate.social.clients.bluesky import bluesky_create_record
from syndicate.social.networks import BLUESKY, MASTODON


@pytest.mark.parametrize("text, expected", [
    ("Ferries resume at dawn after the storm", "en"),
    ("Der Hafen öffnet nach dem Sturm wieder", "de"),
    ("Le port rouvre après la tempête", "fr"),
    ("Порт знову відкрито після шторму", "uk"),
    ("東京で大雨", "ja"),  # kana: Japanese, however short
    ("北京举办国际书展", "zh"),
    ("서울 날씨", "ko"),  # two words: too few for the model, enough for the alphabet
    ("Καλημέρα κόσμε", "el"),
    ("Harbour", None),  # one word says nothing
    ("https://example.com/a @someone #tag 2026", None),  # nothing but links, handles, tags and numbers
    ("", None),
])
def test_it_reads_a_language_off_the_words_only_when_they_say_it(text, expected):
    assert language.detect(text) == expected


@pytest.mark.parametrize("values, expected", [
    ((None, " en_us ", "de"), "en-US"),
    (("pt-br",), "pt-BR"),
    (("zh-Hant-TW",), "zh-Hant-TW"),
    (("english", "<script>", "en;q=1", None), None),
    ((42, "de"), "de"),
])
def test_it_takes_the_first_well_formed_tag_a_feed_declares(values, expected):
    assert language.declared(*values) == expected


def test_the_words_outweigh_the_feed_and_keep_its_region_when_they_agree():
    assert language.of_story("Ferries resume at dawn after the storm", declared_tag="en-GB") == "en-GB"
    assert language.of_story("Der Hafen öffnet nach dem Sturm wieder", declared_tag="en-GB") == "de"
    assert language.of_story("Harbour", declared_tag="en-GB") == "en-GB"
    assert language.of_story("Harbour") is None


def test_a_hostile_story_is_read_in_bounded_time_and_space():
    """A megabyte of text: only the first characters are read."""
    assert language.of_story("Der Hafen öffnet nach dem Sturm wieder. " + "x" * 1_000_000) == "de"


def test_an_item_is_stored_with_its_language():
    entry = documents.normalise(link="https://news.example/a", guid=None, title="Der Hafen öffnet wieder",
                                html="<p>Die Fähren fahren seit heute Morgen wieder nach Fahrplan.</p>",
                                declared_language="en-GB")
    assert entry.language == "de"


def request(story_language: str | None) -> PostRequest:
    made = teaser.compose(MASTODON, title="Harbour", lead="", url="https://news.example/a")
    return PostRequest(teaser=made, card=None, post_id=1, created_at=datetime(2026, 5, 1, tzinfo=UTC),
                       language=story_language)


def test_the_accounts_language_stands_in_only_when_the_storys_is_unknown():
    assert mastodon.status(request("pt-BR"), "unlisted", "fr")["language"] == "pt"
    assert mastodon.status(request(None), "unlisted", "fr")["language"] == "fr"
    assert mastodon.status(request(None), "unlisted", None)["language"] is None
    now = datetime(2026, 5, 1, tzinfo=UTC)
    bluesky = teaser.compose(BLUESKY, title="Harbour", lead="", url="https://news.example/a")
    for story, account, langs in (("pt-BR", "fr", ["pt-BR"]), (None, "fr", ["fr"]), (None, None, None)):
        made = PostRequest(teaser=bluesky, card=None, post_id=1, created_at=now, language=story)
        assert bluesky_create_record("did:plc:x", made, account, None, now).record.langs == langs
