"""A newsletter's language: set and refused through the CLI, and its editions rendered in it, once, through the
real render (Jinja2, premailer): the masthead's date in its zone and language, the counts, the footer and its
links; every reader's copy is that render with their own links put in."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from conftest import cli_in, configured
from syndicate.cli.main import main
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.delivery.copies import MessageFactory
from syndicate.models import DEFAULT_SUBJECT, Article, Edition, Newsletter, utcnow
from syndicate.newsletters import archive, lists, rendering
from syndicate.newsletters.rendering import UNSUBSCRIBE_URL

WEEKDAYS = "Montag|Dienstag|Mittwoch|Donnerstag|Freitag|Samstag|Sonntag"
MONTHS = "Januar|Februar|März|April|Mai|Juni|Juli|August|September|Oktober|November|Dezember"


def newsletter(language: str | None) -> Newsletter:
    return Newsletter(id=3, slug="morgen", name="Der Morgen", from_name="Der Morgen", from_address="m@news.example",
                      subject_template=DEFAULT_SUBJECT, template="edition", timezone="Europe/Berlin",
                      language=language)


def edition() -> Edition:
    # 23:30 UTC on Sunday is already Monday in Berlin: the date is the newsletter's own, in its language.
    at = datetime(2026, 12, 6, 23, 30, tzinfo=UTC)
    return Edition(id=41, newsletter_id=3, number=12, kind="regular", status="scheduled", scheduled_for=at, cut_at=at)


def stories(count: int) -> list[Article]:
    return [Article(id=100 + i, title=f"Story {i}", url=f"https://news.example/{i}", lead="A lead.", categories=[],
                    author="Zoë Ødegård", published_at=datetime(2026, 12, 6, tzinfo=UTC)) for i in range(count)]


def test_a_german_newsletters_edition_is_rendered_in_german(make_settings):
    settings = make_settings(base_url="https://news.example")
    _, html, text = rendering.render_edition(newsletter("de"), edition(), stories(2), settings)

    assert "Montag, 7. Dezember 2026 · Nr. 12" in html and "Montag, 7. Dezember 2026 · Nr. 12 · 2 Artikel" in text
    assert '<html lang="de"' in html
    assert f'href="{UNSUBSCRIBE_URL}" style="color:#5f5e59; text-decoration:underline">Abbestellen</a>' in html
    assert ">Einstellungen verwalten</a>" in html and ">Im Browser ansehen</a>" in html
    assert "Sie erhalten Der Morgen, weil Sie ihn abonniert haben." in html
    assert ">Zum Artikel\u00a0→</a>" in html and "Von Zoë Ødegård" in html
    assert f"Abbestellen:\n{UNSUBSCRIBE_URL}" in text and "Zum Artikel:\nhttps://news.example/0" in text
    for english in ("Unsubscribe", "Manage preferences", "View in browser", "Read the story", "stories", "Monday"):
        assert english not in html and english not in text, english
    public = rendering.public_of(html, settings)  # the web view: the public footer, in German too
    assert ">Der Morgen abonnieren</a>" in public and ">Frühere Ausgaben</a>" in public


def test_one_story_is_counted_in_the_languages_own_singular(make_settings):
    settings = make_settings()
    assert "· 1 Artikel" in rendering.render_edition(newsletter("de"), edition(), stories(1), settings)[2]
    assert "· 1 article" in rendering.render_edition(newsletter("fr"), edition(), stories(1), settings)[2]
    assert "· 3 articles" in rendering.render_edition(newsletter("fr"), edition(), stories(3), settings)[2]
    assert "lundi 7 décembre 2026 · N° 12" in rendering.render_edition(newsletter("fr"), edition(), stories(1),
                                                                        settings)[2]


@pytest.mark.parametrize("language", ["en", None, "xx"])
def test_an_english_or_unknown_language_renders_the_english_edition(make_settings, language):
    settings = make_settings()
    _, html, text = rendering.render_edition(newsletter(language), edition(), stories(2), settings)
    assert "Monday, December 7, 2026 · No. 12 · 2 stories" in text and '<html lang="en"' in html


def test_each_readers_copy_is_the_one_german_render_with_their_own_link(make_settings):
    settings = make_settings(base_url="https://news.example")
    made = edition()
    made.subject, made.html, made.text = rendering.render_edition(newsletter("de"), made, stories(2), settings)
    made.newsletter = newsletter("de")
    factory = MessageFactory(settings, made.newsletter, made)
    copies = [email.message_from_bytes(factory(7, subscriber_id, f"r{subscriber_id}@example.org", None).data,
                                       policy=email.policy.default) for subscriber_id in (1, 2)]
    texts = [copy.get_body(("plain",)).get_content() for copy in copies]
    for text in texts:
        assert "Abbestellen:\r\nhttps://news.example/u/" in text and UNSUBSCRIBE_URL not in text
        assert "· Nr. 12 · 2 Artikel" in text
    assert texts[0] != texts[1] and "Abbestellen" in copies[0].get_body(("html",)).get_content()


# ── through the CLI ──────────────────────────────────────────────────────────


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
            "SYNDICATE_BASE_URL": "https://news.example", "SYNDICATE_LINK_CHECK": "0",
            "SYNDICATE_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}


def test_the_cli_sets_a_newsletters_language_and_its_edition_comes_out_in_it(env, tmp_path):
    syndicate = cli_in(env)
    svc = configured(Settings.from_env(env))
    syndicate("newsletter", "add", "morgen", "--name", "Der Morgen", "--from-address", "m@news.example",
              "--timezone", "Europe/Berlin", "--language", "de", "--max-age", "0")
    now = utcnow()
    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morgen").language == "de"
        session.add(Article(identity="s", url="https://news.example/s", title="Der Stadtrat tagt", lead="Ein Satz.",
                            content_hash="s" * 64, categories=[], published_at=now, first_seen_at=now))
    assert "language" in syndicate("newsletter", "show", "morgen") and "de" in syndicate("newsletter", "show",
                                                                                          "morgen")
    syndicate("edition", "cut", "morgen", "--draft")
    html_path, text_path = syndicate("edition", "preview", "morgen/1", "--out", str(tmp_path / "p")).split()
    text = open(text_path, encoding="utf-8").read()
    assert re.search(rf"^({WEEKDAYS}), \d{{1,2}}\. ({MONTHS}) 20\d\d · Nr\. 1 · 1 Artikel$", text, re.M), text
    assert "Abbestellen:" in text and "Im Browser ansehen:" in text
    assert '<html lang="de"' in open(html_path, encoding="utf-8").read()

    syndicate("newsletter", "edit", "morgen", "--language", "fr")
    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morgen").language == "fr"


@pytest.mark.parametrize("given", ["xx", "deutsch", "de\nX: y", "../../../etc/passwd", ""])
def test_the_cli_refuses_a_language_without_translations_and_lists_the_ones_there_are(env, given):
    configured(Settings.from_env(env))
    runner = CliRunner()
    added = runner.invoke(main, ["newsletter", "add", "morgen", "--name", "M", "--from-address", "m@news.example",
                                 "--language", given], env=env)
    assert added.exit_code != 0
    said = added.output + str(added.exception)
    assert "has no translations here; choose one of en (English), de (Deutsch), fr (Français)" in said, said
    assert "Traceback" not in added.output
    cli_in(env)("newsletter", "add", "morgen", "--name", "M", "--from-address", "m@news.example")
    edited = runner.invoke(main, ["newsletter", "edit", "morgen", "--language", given], env=env)
    assert edited.exit_code != 0
    svc = configured(Settings.from_env(env))
    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morgen").language == "en"


def test_a_new_german_newsletters_subject_is_german_and_an_english_ones_is_as_before(svc):
    with transaction(svc.Session) as session:
        morgen = lists.add_newsletter(session, slug="morgen", name="Der Morgen", from_address="m@news.example",
                                      language="de")
        daily = lists.add_newsletter(session, slug="daily", name="Daily", from_address="d@news.example")
        assert daily.subject_template == DEFAULT_SUBJECT
        subjects = [rendering.render_subject(morgen, edition(), stories(count)) for count in (1, 2, 3)]
        assert subjects == ["Story 0", "Story 0 — und 1 weiterer Artikel", "Story 0 — und 2 weitere Artikel"]
        assert rendering.render_subject(daily, edition(), stories(3)) == "Story 0 — and 2 more stories"
        # Changing the language later keeps the subject the editor may have made their own.
        lists.update_newsletter(session, morgen, language="fr")
        assert "weitere Artikel" in morgen.subject_template


def test_a_withdrawn_storys_notice_is_in_the_newsletters_language_and_zone():
    gone = Article(title="Gone", withdrawn_at=datetime(2026, 12, 6, 23, 30, tzinfo=UTC))  # the 7th in Berlin
    assert archive.notice(gone, newsletter("de")) == (
        "Dieser Artikel wurde am 7. Dezember 2026 von der Redaktion zurückgezogen.")
    assert archive.notice(gone, newsletter("en")) == "This story was withdrawn by the editors on December 7, 2026."
