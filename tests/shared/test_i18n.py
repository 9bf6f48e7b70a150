"""The catalogues: every string marked for translation is in each one (so a string added later is caught here),
a translation keeps its msgid's placeholders and can't put markup on a page; English is what an unknown
language, a missing message and a hostile Accept-Language get."""

from __future__ import annotations

import re
import shutil
import string
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from syndicate import i18n, templating
from syndicate.errors import InvalidInput
from syndicate.models import Newsletter

TRANSLATED = [language for language in i18n.languages() if language != i18n.SOURCE]
PERCENT = re.compile(r"%(?:\((\w+)\))?[#0 +-]*\d*(?:\.\d+)?[sdifr%]")
BRACES = string.Formatter()


def catalogue(language: str):
    with i18n.catalogue_path(language).open("rb") as f:
        return read_po(f, locale=language, domain=i18n.DOMAIN)


def placeholders(text: str) -> list[str]:
    """%(name)s and %s as they appear, and {name}: what formatting fills in."""
    named = sorted(m.group(0) for m in PERCENT.finditer(text) if m.group(0) != "%%")
    braces = sorted(field for _, field, _, _ in BRACES.parse(text.replace("{{", "").replace("}}", "")) if field)
    return named + braces


def test_german_and_french_have_catalogues_and_english_is_the_source():
    assert i18n.languages()[0] == "en" and {"de", "fr"} <= set(TRANSLATED)


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_marked_string_is_translated_in_each_catalogue(language):
    # Extracted afresh from the templates and the Python: a string marked after the catalogue was updated is
    # missing here until `python -m syndicate.i18n extract` has run and a translator has filled it in.
    marked = {message.id for message in i18n.extract() if message.id}
    assert len(marked) > 60
    translated = {m.id for m in catalogue(language) if m.id and not m.fuzzy
                  and all(m.string if isinstance(m.string, tuple) else [m.string])}
    assert sorted(map(str, marked - translated)) == []


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_translation_keeps_the_placeholders_of_its_msgid(language):
    checked = 0
    for message in catalogue(language):
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for translated in strings:
            # A plural's forms may leave out %(num)s (e.g. "one"), never add or rename one.
            wanted = set(placeholders(ids[-1])) | set(placeholders(ids[0]))
            assert set(placeholders(translated)) <= wanted, (message.id, translated)
            if len(ids) == 1:
                assert placeholders(translated) == placeholders(ids[0]), (message.id, translated)
            assert "<" not in translated and ">" not in translated, (message.id, translated)
            checked += 1
    assert checked > 60


def test_a_placeholder_check_catches_a_renamed_or_dropped_placeholder():
    assert placeholders("Sie erhalten %(newsletter)s") != placeholders("You get %(name)s")
    assert placeholders("Hallo") != placeholders("Hello %(name)s,")
    assert placeholders("{count} Artikel") == placeholders("{count} stories")


def test_an_html_template_escapes_a_hostile_translation(tmp_path, monkeypatch):
    po = tmp_path / "de" / "LC_MESSAGES" / "syndicate.po"
    po.parent.mkdir(parents=True)
    po.write_text('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
                  'msgid "Unsubscribe from %(newsletter)s?"\n'
                  'msgstr "<script>x()</script>%(newsletter)s abbestellen?"\n',
                  encoding="utf-8")
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.languages.cache_clear(), i18n.translations.cache_clear(), templating._environment.cache_clear()
    try:
        page = templating.render("web/unsubscribe.html", language="de", form_hours=1,
                                 newsletter=Newsletter(name="Daily <b>"), subscriber=type("S", (), {"email": "a@b"}))
    finally:
        i18n.languages.cache_clear(), i18n.translations.cache_clear(), templating._environment.cache_clear()
    assert "<h1>&lt;script&gt;x()&lt;/script&gt;Daily &lt;b&gt; abbestellen?</h1>" in page
    assert "<script>" not in page


def test_an_unknown_language_and_a_missing_message_fall_back_to_english():
    assert i18n.known("xx") == "en" and i18n.known(None) == "en"
    assert templating.render("web/message.html", language="xx", title="T", message="M", link=None).startswith(
        '<!DOCTYPE html>\n<html lang="en">')
    german = i18n.translations("de")
    assert german.gettext("Unsubscribe") == "Abbestellen"
    assert german.gettext("A sentence no catalogue has") == "A sentence no catalogue has"
    assert german.ngettext("%(num)s story", "%(num)s stories", 2) % {"num": 2} == "2 Artikel"
    assert i18n.translations("fr").ngettext("%(num)s story", "%(num)s stories", 0) % {"num": 0} == "0 article"


def test_a_language_without_a_catalogue_is_refused_with_the_choice():
    assert i18n.check_language(" DE ") == "de"
    with pytest.raises(InvalidInput) as refused:
        i18n.check_language("xx")
    assert "en (English), de (Deutsch), fr (Français)" in str(refused.value)
    for hostile in ("", "../../etc", "de\r\nX-Injected: 1", "de/LC_MESSAGES", "<script>"):
        with pytest.raises(InvalidInput):
            i18n.check_language(hostile)


@pytest.mark.parametrize("header, chosen", [
    ("de-DE,de;q=0.9,en;q=0.8", "de"),
    ("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5", "fr"),
    ("en-GB,de;q=0.5", "en"),
    ("es-ES,es;q=0.9,de;q=0.3", "de"),  # no Spanish: the next the visitor takes
    ("de;q=0, fr", "fr"),  # q=0: not wanted at all
    ("pt-BR", "en"),
    ("", "en"),
    (None, "en"),
    ("de;q=banana, ;;;, \x00fr", "en"),
    ("x" * 100_000 + ",de", "en"),  # a header too long to read is read only so far
    (",".join(["zz"] * 5000) + ",de", "en"),
])
def test_the_browsers_language_is_chosen_among_ours_and_a_malformed_header_is_no_error(header, chosen):
    assert i18n.negotiate(header) == chosen


def test_dates_are_written_in_the_language():
    from datetime import date
    day = date(2026, 12, 7)
    assert i18n.full_date(day, "en") == "Monday, December 7, 2026"
    assert i18n.full_date(day, "de") == "Montag, 7. Dezember 2026"
    assert i18n.long_date(day, "fr") == "7 décembre 2026"
    assert i18n.full_date(day, "xx") == "Monday, December 7, 2026"


def test_extraction_adds_a_newly_marked_string_to_every_catalogue_and_keeps_the_translations(tmp_path, monkeypatch):
    # A copy of the checkout's marked sources and catalogues, with one template string marked since.
    root = Path(__file__).parents[2]
    shutil.copy(root / "babel.cfg", tmp_path / "babel.cfg")
    shutil.copytree(root / "templates", tmp_path / "templates")
    for stage in ("web", "subscribers", "newsletters"):
        shutil.copytree(root / "src" / "syndicate" / stage, tmp_path / "src" / "syndicate" / stage)
    shutil.copytree(i18n.LOCALE_DIR, tmp_path / "locale")
    welcome = tmp_path / "templates" / "email" / "greeting" / "body.txt"
    welcome.parent.mkdir()
    welcome.write_text('{{ _("Welcome aboard, %(name)s!", name=subscriber.name) }}\n')
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path / "locale")
    i18n.languages.cache_clear(), i18n.translations.cache_clear()
    try:
        report = i18n.update_catalogues(tmp_path)
        assert report == [f"{language}: {len(catalogue(language))} messages, 1 untranslated"
                          for language in TRANSLATED]
        german = catalogue("de")
        assert german["Welcome aboard, %(name)s!"].string == ""
        assert german["Welcome aboard, %(name)s!"].locations == [("templates/email/greeting/body.txt", 1)]
        assert german["Unsubscribe"].string == "Abbestellen"  # what was translated stays
        assert "Welcome aboard" in (tmp_path / "locale" / "messages.pot").read_text()
        # Untranslated, it reads in English until a translator fills it in.
        assert i18n.translations("de").gettext("Welcome aboard, %(name)s!") == "Welcome aboard, %(name)s!"
    finally:
        i18n.languages.cache_clear(), i18n.translations.cache_clear()
