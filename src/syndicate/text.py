"""Plain-text helpers every stage uses: one line of text for a header, clean text for a reader, a shortened
text, and the sentences of a story (one splitter, for the lead an edition shows and the one a teaser quotes)."""

from __future__ import annotations

import unicodedata

import regex

# Format characters are dropped, except those scripts and emoji need: ZWNJ, ZWJ, LRM, RLM, ALM and the tag
# characters of subdivision flags. Bidi overrides and isolates go: they can reorder what a reader sees.
_INVISIBLE = regex.compile(
    r"[[\p{Cf}\p{Cs}\p{Noncharacter_Code_Point}]--[\u200c-\u200f\u061c\U000E0020-\U000E007F]]", regex.V1
)
_CONTROL = regex.compile(r"\p{Cc}")
# Control characters but a text's line breaks and tabs: what text kept on several lines (an editor's note, a
# server's reply) must not carry: a NUL PostgreSQL's text can't hold, an escape sequence for a terminal.
CONTROL_BUT_BREAKS = regex.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
UNTITLED = "(untitled)"  # a story's title when its item had none: ingest stores it, a teaser never shows it


def one_line(text: str) -> str:
    """Header-safe: no CR, LF or other control characters, whitespace collapsed — the `clean` text, with a
    fast path for the common case, since it runs for every header of every mail."""
    if text.isprintable() and text.isascii():  # one C loop each: nothing to take out, nothing to normalise
        return " ".join(text.split())
    return clean(text)


def clean(text: str) -> str:
    """One line of plain text as the writer meant it: control characters become spaces, invisible format
    characters go (but not the joiners, marks and tags that emoji and scripts need), NFC, whitespace
    collapsed. What a story's title and lead are stored as; each medium cleans further for its own needs."""
    text = _INVISIBLE.sub("", _CONTROL.sub(" ", text))
    return " ".join(unicodedata.normalize("NFC", text).split())


def shorten(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, cut at a word and marked with "…" when it had to be cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if not text[limit - 1].isspace():
        space = cut.rfind(" ")
        if space > limit // 2:  # a word, not half the text: a run without spaces (CJK, a URL) is cut anywhere
            cut = cut[:space]
    return cut.rstrip(" ,;:-–—") + "…"


# ── sentences ────────────────────────────────────────────────────────────────

_TITLES = {"mr", "mrs", "ms", "mx", "dr", "prof", "st", "sr", "jr", "gen", "gov", "sen", "rep", "lt", "col",
           "sgt", "capt", "cmdr", "adm", "maj", "rev", "hon", "pres", "fr", "mme", "mlle", "messrs"}
_ABBREVIATIONS = {"inc", "ltd", "co", "corp", "bros", "vs", "no", "nos", "vol", "fig", "approx", "dept", "est",
                  "govt", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
                  "mt", "ft", "ave", "blvd", "rd"}
_STARTERS = {"the", "a", "an", "this", "that", "these", "those", "it", "its", "he", "she", "they", "we", "i",
             "in", "on", "at", "but", "and", "however", "his", "her", "their", "there", "as", "after", "when",
             "while", "meanwhile"}
# A run of marks is read from its start, once (possessive): a stranger's 100 KB of dots is linear, not quadratic.
_SENTENCE_END = regex.compile(r"(?<![.!?‽؟۔।…])[.!?‽؟۔।…]++[)\]\"'”’»」』]*+(?=\s|$)"
                              r"|(?<![。！？])[。！？]++[)\]\"”’」』）]*+")
_OPENERS, _CLOSERS = "“„«「『", "”»」』"


def sentences(text: str) -> list[str]:
    """The sentences of one block of text, as written (see `first_sentence` for where one ends)."""
    out, rest = [], clean(text)
    while rest:
        sentence = first_sentence(rest)
        out.append(sentence.strip())
        rest = rest[len(sentence):].strip()
    return out


def first_sentence(text: str) -> str:
    """The first sentence of clean text: not ended by "U.S.", "Mr.", initials, "3.5" or a "…" inside quotes."""
    sentence, unclosed = _first_sentence(text, mind_quotes=True)
    # A quote that never closes (a stray “) would hide every sentence end after it: then read past quotes.
    return _first_sentence(text, mind_quotes=False)[0] if unclosed else sentence


def join_sentences(chosen: list[str]) -> str:
    """Sentences joined as written: a space after Latin punctuation, none after a CJK full stop."""
    text = ""
    for sentence in chosen:
        text += sentence if not text or text[-1] in "。！？」』" else " " + sentence
    return text


def _first_sentence(text: str, mind_quotes: bool) -> tuple[str, bool]:
    """The first sentence, and whether the text ran out inside quotes before one ended."""
    quotes: list[str] = []
    read = 0
    for match in _SENTENCE_END.finditer(text):
        for ch in text[read:match.end()]:
            _track_quote(quotes, ch)
        read = match.end()
        if mind_quotes and quotes:
            continue
        following = text[match.end():match.end() + 64].lstrip()  # the text is clean: one space at most
        if not following:
            break
        if following[0].islower():  # "e.g. the", "p.m. on", "… and then"
            continue
        if match.group().startswith(".") and not _ends_at(text[max(match.start() - 64, 0):match.start()], following):
            continue
        return text[:match.end()], False
    for ch in text[read:]:
        _track_quote(quotes, ch)
    return text, bool(quotes)


def _track_quote(quotes: list[str], ch: str) -> None:
    if ch == "“" and quotes and quotes[-1] == "„":  # German „…“
        quotes.pop()
    elif ch == '"' and quotes and quotes[-1] == '"':
        quotes.pop()
    elif ch == '"':
        quotes.append(ch)
    elif ch in _OPENERS:
        quotes.append(ch)
    elif ch in _CLOSERS and quotes:
        quotes.pop()


def _ends_at(before: str, following: str) -> bool:
    """Whether a full stop after the word ending `before` ends the sentence (an abbreviation is a short word)."""
    word = before.rsplit(None, 1)[-1].lstrip("([{\"'“‘«") if before.strip() else ""
    next_word = regex.match(r"\p{L}*", following).group().lower()
    if word.lower() in _TITLES:  # "Mr. Pashinyan"
        return False
    initial, dotted = regex.fullmatch(r"\p{Lu}", word), regex.fullmatch(r"(?:\p{L}\.)+\p{L}", word)
    if initial or dotted or word.lower() in _ABBREVIATIONS:
        # Initials and abbreviations ("J. R. R. Tolkien", "U.S.", "Inc.") end a sentence only before a word
        # that starts one: "… with the U.S. The drills …".
        return next_word in _STARTERS
    return True


POSTAL_ADDRESS_CHARACTERS = 500  # the newsletters.postal_address column
POSTAL_ADDRESS_LINES = 8


def postal_address(text: str) -> str:
    """A sender's postal address as typed, its lines kept (a footer prints them one under the other), each
    line `clean` (no control character, so no header or layout can be made of it), blank lines dropped.
    ValueError, saying what to do, when it is too long to be an address."""
    lines = [line for line in (clean(line) for line in text.splitlines()) if line]
    address = "\n".join(lines)
    if len(lines) > POSTAL_ADDRESS_LINES or len(address) > POSTAL_ADDRESS_CHARACTERS:
        raise ValueError(f"a postal address is at most {POSTAL_ADDRESS_LINES} lines and "
                         f"{POSTAL_ADDRESS_CHARACTERS} characters ({len(lines)} lines, {len(address)} characters "
                         "given); give the street, town and country, e.g. 'Example News, 1 Main St, "
                         "Springfield, IL 62701, USA'")
    return address
