"""Each network's length rules: X weighs characters (CJK and emoji 2) and counts a link 23; Mastodon counts
graphemes, a link at the instance's fixed cost and a mention without its domain; Bluesky counts graphemes and
bytes. A teaser is valid when `fits` says so by the network's own count."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import regex

BLUESKY_MAX_BYTES = 3000
NAMES = {"x": "X", "mastodon": "Mastodon", "bluesky": "Bluesky"}
_GRAPHEME = regex.compile(r"\X")


# ── networks ─────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Network:
    """The length rules of one network (one instance, for Mastodon)."""

    name: str  # "x" | "mastodon" | "bluesky"
    limit: int  # X 280 (weighted); Mastodon the instance's max_characters; Bluesky 300 graphemes
    url_cost: int | None = None  # what a link counts: X 23, Mastodon characters_reserved_per_url; Bluesky None

    def __post_init__(self):
        if self.name not in NAMES:
            raise ValueError(f"unknown network {self.name!r}: expected one of {', '.join(NAMES)}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"a network's limit is a whole number ≥ 1, not {self.limit!r}")
        if self.name == "bluesky" and self.url_cost is not None:
            raise ValueError("Bluesky counts a link as written (its label): url_cost must be None")
        if self.name != "bluesky":
            cost = 23 if self.url_cost is None else self.url_cost
            if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
                raise ValueError(f"url_cost is a whole number ≥ 0, not {self.url_cost!r}")
            object.__setattr__(self, "url_cost", cost)

    @property
    def display_name(self) -> str:
        return NAMES[self.name]


X = Network("x", 280, 23)
MASTODON = Network("mastodon", 500, 23)
BLUESKY = Network("bluesky", 300)
_DEFAULTS = {"x": X, "mastodon": MASTODON, "bluesky": BLUESKY}


def network(name: str, limit: int | None = None, url_cost: int | None = None) -> Network:
    """A network's rules, from its name and (for a Mastodon instance) its own limits."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _DEFAULTS:
        raise ValueError(f"unknown network {name!r}: expected one of {', '.join(NAMES)}")
    default = _DEFAULTS[key]
    return Network(key, default.limit if limit is None else limit, default.url_cost if url_cost is None else url_cost)


# ── counting ─────────────────────────────────────────────────────────────────


def length(network: Network, text: str) -> int:
    """The text's length by the network's own rule."""
    if network.name == "x":
        return _x_length(text, network.url_cost)
    if network.name == "mastodon":
        return _mastodon_length(text, network.url_cost)
    return len(_GRAPHEME.findall(text))


# twitter-text's link finder backtracks over a long run without spaces (seconds for 5,000 CJK characters), and
# links and emoji never span a space: so a text is counted a word at a time, each word once (cached), which is
# the same sum. Spaces are split as twitter-text knows them.
_SPACES = regex.compile(r"([\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+)")
_LONG_WORD = 2000  # characters: past this, a word that might hold a link is counted at an upper bound
_CHUNK = 64  # graphemes weighed at a time in a word that can't hold a link


def _x_length(text: str, url_cost: int) -> int:
    return sum(_x_word(word, url_cost) for word in _SPACES.split(text) if word)


@lru_cache(maxsize=2048)
def _x_word(word: str, url_cost: int) -> int:
    from twitter_text import parse_tweet  # its regexes take 0.25 s to load: only where a length is counted

    # twitter-text NFC-normalises before it weighs, as X does.
    rules = _x_rules(url_cost)
    if "." not in word:  # no link without a dot in its domain: weigh it in short runs, never inside an emoji
        graphemes = _GRAPHEME.findall(word)
        return sum(parse_tweet("".join(graphemes[i:i + _CHUNK]), rules).weightedLength
                   for i in range(0, len(graphemes), _CHUNK))
    if len(word) <= _LONG_WORD:
        return parse_tweet(word, rules).weightedLength
    return 2 * len(unicodedata.normalize("NFC", word)) + url_cost * word.count(".")  # nothing weighs more than 2


@lru_cache
def _x_rules(url_cost: int) -> dict:
    from twitter_text.config import config as twitter_config

    return {**twitter_config["defaults"], "transformed_url_length": url_cost}


def _mastodon_length(text: str, url_cost: int) -> int:
    # Mastodon (StatusLengthValidator) counts grapheme clusters of the text in which every link it makes is
    # `url_cost` characters and every mention is "@user" without its domain. Links and mentions never span a
    # space, so each word is rewritten once (cached); the graphemes are counted over the whole text, since a
    # combining mark after a space joins the space's cluster.
    return len(_GRAPHEME.findall("".join(_mastodon_word(word, url_cost) for word in _SPACES.split(text))))


@lru_cache(maxsize=2048)
def _mastodon_word(word: str, url_cost: int) -> str:
    """The word as Mastodon counts it: its links as `url_cost` placeholder characters, its mentions as @user."""
    if "://" not in word and "@" not in word:
        return word
    if len(word) > _LONG_WORD:  # an upper bound: a link at every "://", on top of the word as written
        return word + "x" * url_cost * word.count("://")
    found = sorted([*_mastodon_links(word), *_mastodon_mentions(word)])
    out, at = [], 0
    for start, end, counted in found:
        if start >= at:  # Mastodon drops an entity that overlaps an earlier one
            out += [word[at:start], "x" * url_cost if counted is None else counted]
            at = end
    return "".join(out) + word[at:]


# Mastodon's mention (Account::MENTION_RE): "@user" or "@user@domain", not after a word character, "=" or "/".
_MASTODON_MENTION = regex.compile(
    r"(?<![=/\p{L}\p{M}\p{Nd}\p{Pc}])@([a-z0-9_]+(?:[.-]+[a-z0-9_]+)*)"
    r"(?:@([\p{L}\p{M}\p{Nd}\p{Pc}]+(?:[.-]+[\p{L}\p{M}\p{Nd}\p{Pc}]+)*))?", regex.IGNORECASE)
_LATIN_ACCENTS = regex.compile(r"[\xC0-\xD6\xD8-\xF6\xF8-\xFF\u0100-\u024F\u0253\u0254\u0256\u0257\u0259\u025B"
                               r"\u0263\u0268\u026F\u0272\u0289\u028B\u02BB\u0300-\u036F\u1E00-\u1EFF]")


def _mastodon_mentions(word: str):
    for found in _MASTODON_MENTION.finditer(word):
        after = word[found.end():]
        if after[:1] in ("@", "＠") or _LATIN_ACCENTS.match(after) or after.startswith("://"):
            continue  # twitter-text's end_mention_match: not a mention that ends here
        if found.group(2) and len(found.group(2)) > 253:
            continue
        yield found.start(), found.end(), "@" + found.group(1)


# Mastodon's link finder (config/initializers/twitter_regex.rb): twitter-text's domain rules, a protocol
# required (a few more than http), any character but space, <>() and ? in a path, which must end in a
# character that doesn't close a sentence; a query of ASCII or any non-ASCII letter, ending in one of a few.
_MASTODON_PROTOCOLS = r"(?:https?|dat|dweb|ipfs|ipns|ssb|gopher|gemini)://"
_PATH_ENDING_NOT = set("()?!*\"'「」<>;:=,.$%[]~&|@")
_UCHARS = (r"\u00A0-\uD7FF\uF900-\uFDCF\uFDF0-\uFFEF\U00010000-\U0001FFFD\U00020000-\U0002FFFD\U00030000-\U0003FFFD"
           r"\U00040000-\U0004FFFD\U00050000-\U0005FFFD\U00060000-\U0006FFFD\U00070000-\U0007FFFD\U00080000-\U0008FFFD"
           r"\U00090000-\U0009FFFD\U000A0000-\U000AFFFD\U000B0000-\U000BFFFD\U000C0000-\U000CFFFD\U000D0000-\U000DFFFD"
           r"\U000E1000-\U000EFFFD\uE000-\uF8FF\U000F0000-\U000FFFFD\U00100000-\U0010FFFD")
_QUERY = regex.compile(rf"\?[a-z0-9!?*'();:&=+$/%#\[\]\-_.,~|@^{_UCHARS}]*", regex.IGNORECASE)
_QUERY_END = regex.compile(rf"[a-z0-9_&=#/\-{_UCHARS}]", regex.IGNORECASE)


@lru_cache(maxsize=1)
def _mastodon_start() -> regex.Pattern:
    from twitter_text.regexp.valid_domain import valid_domain
    from twitter_text.regexp.valid_url_preceding_chars import valid_url_preceding_chars

    return regex.compile(rf"(?<={valid_url_preceding_chars.pattern}){_MASTODON_PROTOCOLS}"
                         rf"(?:{valid_domain.pattern})(?::[0-9]+)?", regex.IGNORECASE | regex.V0)


def _mastodon_links(word: str):
    at = 0
    while (found := _mastodon_start().search(word, at)) is not None:
        end = _path_end(word, found.end())
        if (query := _QUERY.match(word, end)) is not None:
            ends = [i + 1 for i in range(query.start() + 1, query.end()) if _QUERY_END.match(word[i])]
            end = ends[-1] if ends else end
        yield found.start(), end, None
        at = end


def _path_end(word: str, at: int) -> int:
    """Where a link's path ends: its characters, with balanced parentheses (one level nested), up to the last
    one that may end it."""
    if word[at:at + 1] != "/":
        return at
    end, i, depth = at + 1, at + 1, 0  # "/" alone may end a path
    last_close = word.rfind(")")
    while i < len(word) and word[i] not in "<>?":
        ch = word[i]
        if ch == "(":
            depth += 1
            if depth > 2 or last_close < i:
                break
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        i += 1
        if depth == 0 and (ch == ")" or ch not in _PATH_ENDING_NOT):
            end = i
    return end


def fits(network: Network, text: str) -> bool:
    """Whether the network takes the text: within its limit by its own count (and Bluesky's byte limit)."""
    if network.name == "bluesky":
        return len(text.encode()) <= BLUESKY_MAX_BYTES and len(_GRAPHEME.findall(text)) <= network.limit
    return length(network, text) <= network.limit
