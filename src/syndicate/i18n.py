"""Readers' languages: the gettext catalogues in syndicate/locale, dates written in a language, and the language
a browser asks for. English is the source language (the msgids); any other needs its catalogue, and what a
catalogue lacks falls back to English, message by message.

The catalogues are .po files read at run time (compiled in memory, once per language per process): the tree
holds no generated .mo. `python -m syndicate.i18n extract` gathers the marked strings of templates/email,
templates/web and the Python that talks to readers into locale/messages.pot and merges them into each
language's .po (new ones empty, i.e. English until translated); README.md says how."""

from __future__ import annotations

import re
import sys
from datetime import date, datetime
from functools import cache
from io import BytesIO
from pathlib import Path

from babel.support import NullTranslations, Translations

from syndicate.errors import InvalidInput

SOURCE = "en"
DOMAIN = "syndicate"
LOCALE_DIR = Path(__file__).parent / "locale"
NAMES = {"en": "English", "de": "Deutsch", "fr": "Français"}  # each language in its own words, for choosers


@cache
def languages() -> tuple[str, ...]:
    """English, then every language with a catalogue."""
    return (SOURCE, *sorted(p.parents[1].name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")))


def check_language(code: str) -> str:
    """A newsletter's language as given (CLI, desk): one with a catalogue, or refused with the choice."""
    cleaned = (code or "").strip().lower().replace("_", "-")
    if cleaned not in languages():
        raise InvalidInput(f"the language {code!r} has no translations here; choose one of "
                           f"{', '.join(f'{c} ({NAMES.get(c, c)})' for c in languages())}")
    return cleaned


def known(code: str | None) -> str:
    """`code` when it has a catalogue, else English: a stored language whose catalogue went away still renders."""
    return code if code in languages() else SOURCE


def catalogue_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def translations(language: str) -> NullTranslations:
    """The language's messages as gettext/ngettext; English (or an unknown language) leaves every msgid as it is.
    Untranslated and fuzzy entries are left out, so they read in English."""
    if known(language) == SOURCE:
        return NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with catalogue_path(language).open("rb") as f:
        catalog = read_po(f, locale=language, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def full_date(value: date | datetime, language: str) -> str:
    """"Monday, December 7, 2026", "Montag, 7. Dezember 2026": a datetime already in the reader's zone."""
    from babel.dates import format_date

    return format_date(value, "full", locale=known(language))


def long_date(value: date | datetime, language: str) -> str:
    """"December 7, 2026", "7. Dezember 2026"."""
    from babel.dates import format_date

    return format_date(value, "long", locale=known(language))


ACCEPT_ENTRY = re.compile(r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*$")
MAX_ACCEPT = 40  # entries read from one header: a browser sends a handful


def negotiate(accept_language: str | None) -> str:
    """The language a browser's Accept-Language prefers among ours (de-AT finds de), else English. The header
    is the visitor's: anything malformed in it is passed over, never an error."""
    wanted: list[tuple[float, int, str]] = []
    for position, entry in enumerate((accept_language or "")[:2000].split(",")[:MAX_ACCEPT]):
        match = ACCEPT_ENTRY.match(entry)
        if match is None:
            continue
        quality = float(match.group(2)) if match.group(2) else 1.0
        if quality > 0:
            wanted.append((-quality, position, match.group(1).lower()))
    ours = languages()
    for _, _, tag in sorted(wanted):
        for candidate in (tag, tag.split("-")[0]):
            if candidate in ours:
                return candidate
    return SOURCE


# ── extraction: the marked strings into messages.pot and each catalogue ─────────────────────────────────────

def extract(root: Path | None = None):
    """The catalogue of every marked string in a source checkout (babel.cfg at its root says where they are)."""
    from babel.messages.catalog import Catalog
    from babel.messages.extract import extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg

    root = root or Path(__file__).parents[2]
    config = root / "babel.cfg"
    if not config.is_file():
        raise InvalidInput(f"no {config}: extraction runs in a source checkout of syndicate")
    with config.open() as f:
        method_map, options_map = parse_mapping_cfg(f, str(config))
    catalog = Catalog(project="syndicate", domain=DOMAIN, charset="utf-8")
    for filename, lineno, message, comments, context in extract_from_dir(
            root, method_map, options_map, comment_tags=("Translators:",), strip_comment_tags=True):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return catalog


def update_catalogues(root: Path | None = None) -> list[str]:
    """Write locale/messages.pot and merge it into every language's .po; what each now lacks, in words."""
    from babel.messages.pofile import read_po, write_po

    template = extract(root)
    with (LOCALE_DIR / "messages.pot").open("wb") as f:
        write_po(f, template, width=120, omit_header=False, sort_output=True, no_location=False)
    report = []
    for language in languages()[1:]:
        path = catalogue_path(language)
        with path.open("rb") as f:
            catalog = read_po(f, locale=language, domain=DOMAIN)
        catalog.update(template, no_fuzzy_matching=True)
        with path.open("wb") as f:
            write_po(f, catalog, width=120, sort_output=True, ignore_obsolete=True)
        missing = sum(1 for m in catalog if m.id and not all(m.string if m.pluralizable else [m.string]))
        report.append(f"{language}: {len(catalog)} messages, {missing} untranslated")
    return report


if __name__ == "__main__":  # python -m syndicate.i18n extract
    if sys.argv[1:] != ["extract"]:
        sys.exit("usage: python -m syndicate.i18n extract   (in a source checkout, with PYTHONPATH=src)")
    print("\n".join(update_catalogues()))
