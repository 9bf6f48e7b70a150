"""Each network's length rules: X weighs characters (CJK and emoji 2) and counts a link 23; Mastodon counts
characters with a link at the instance's fixed cost; Bluesky counts graphemes and bytes. A teaser is valid
when `fits` says so by the network's own count."""

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
    # Mastodon counts grapheme clusters (older versions: code points), with each link it would make clickable
    # at url_cost. We count code points, never fewer than graphemes, so a teaser we call valid is never refused
    # by any version. Mastodon finds links with twitter-text (protocol required, a known top-level domain), so
    # we use the same finder: a link it would not recognise is counted as written, as it counts it.
    return sum(_mastodon_word(word, url_cost) for word in _SPACES.split(text) if word)


@lru_cache(maxsize=2048)
def _mastodon_word(word: str, url_cost: int) -> int:
    from twitter_text import extract_urls_with_indices

    if "://" not in word:
        return len(word)
    if len(word) > _LONG_WORD:
        return len(word) + url_cost * word.count("://")  # an upper bound: every "://" a link that costs more
    total = len(word)
    for link in extract_urls_with_indices(word, False):
        start, end = link["indices"]
        total += url_cost - (end - start)
    return total


def fits(network: Network, text: str) -> bool:
    """Whether the network takes the text: within its limit by its own count (and Bluesky's byte limit)."""
    if network.name == "bluesky":
        return len(text.encode()) <= BLUESKY_MAX_BYTES and len(_GRAPHEME.findall(text)) <= network.limit
    return length(network, text) <= network.limit
