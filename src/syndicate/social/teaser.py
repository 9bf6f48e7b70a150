"""article → teaser: the text posted for an article on X, Mastodon or Bluesky, valid by that network's own count.

Each network counts differently: X weighs characters (CJK and emoji 2) and counts a link 23; Mastodon counts
characters with a link at the instance's fixed cost; Bluesky counts graphemes and bytes, and shows a link as a
short label whose facet carries the URL. A teaser is rendered from a small template, then given up piece by
piece — hashtags, the lead, the headline — until it fits by that network's rule. The link is never cut.
"""

from __future__ import annotations

import bisect
import html
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from types import MappingProxyType
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

import regex
from jinja2 import meta

from syndicate.errors import InvalidInput
from syndicate.social.networks import BLUESKY_MAX_BYTES, Network, fits, length
from syndicate.templating import render, sandbox
from syndicate.text import UNTITLED, clean, first_sentence

ELLIPSIS = "…"
BLUESKY_MAX_TAG = 64  # graphemes in a tag facet (app.bsky.richtext.facet#tag)
LABEL_MAX = 30  # graphemes of a Bluesky link label, as Bluesky's own app shortens them
MIN_LEAD_WORDS = 6  # a lead shortened below this says too little to be worth its room

_GRAPHEME = regex.compile(r"\X")
_CJK = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\u3000-\u303f\u30fc\uff00-\uffef]")
_TRIMMED = set(",;:—–-")  # trailing punctuation that looks wrong before an ellipsis
_TAG_PART = regex.compile(r"[\p{L}\p{Nd}_][\p{L}\p{M}\p{Nd}_]*")
_TRAILING_PREPEND = regex.compile(r"\p{Grapheme_Cluster_Break=Prepend}+$")
_LINK = regex.compile(r"https?://[^\s/]\S*", regex.IGNORECASE)
_LINK_TRAILER = set(".,;:!?'\"”’»…")
_HASHTAG = regex.compile(r"(?<!\S)#([\p{L}\p{Nd}_][\p{L}\p{M}\p{Nd}_\u200c]*)")
_UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign")


# ── settings ─────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Options:
    """One account's teaser settings. Keys of `hashtag_map` and entries of `deny` are kept case-folded."""

    hashtags: bool = True
    max_hashtags: int = 2
    hashtag_map: Mapping[str, str] = field(default_factory=dict, hash=False)  # category → tag; "" means none
    deny: frozenset[str] = frozenset()  # tags never used, with or without '#'
    utm: bool = True
    utm_source: str | None = None  # None: the network's name
    utm_medium: str = "social"
    utm_campaign: str = "syndicate"
    template: str | None = None  # an editor's own teaser template; None: templates/social/<network>.txt

    def __post_init__(self):
        folded = {clean(key).casefold(): value for key, value in self.hashtag_map.items()}
        object.__setattr__(self, "hashtag_map", MappingProxyType(folded))
        object.__setattr__(self, "deny", frozenset(_tag(tag).casefold() for tag in self.deny) - {""})

    @classmethod
    def from_dict(cls, data: dict) -> Options:
        """From an account's JSON settings: strict, so a typo is an error rather than a silent default."""
        if not isinstance(data, Mapping):
            raise InvalidInput(f"teaser settings must be a JSON object, not {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                raise InvalidInput(f"unknown teaser setting {key!r}: the known settings are {', '.join(known)}")
        for key, value in data.items():
            check, expected = _SETTING_TYPES[key]
            if not check(value):
                raise InvalidInput(f"teaser setting {key!r} must be {expected}, not {value!r}")
        if data.get("template") is not None:
            _editor_template(data["template"])
        return cls(**{key: frozenset(value) if key == "deny" else value for key, value in data.items()})


def _is_str(value) -> bool:
    return isinstance(value, str)


_SETTING_TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "hashtags": (lambda v: isinstance(v, bool), "true or false"),
    "max_hashtags": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number ≥ 0"),
    "hashtag_map": (lambda v: isinstance(v, dict) and all(_is_str(k) and _is_str(t) for k, t in v.items()),
                    'an object of category → hashtag strings, e.g. {"World News": "World"}'),
    "deny": (lambda v: isinstance(v, list) and all(map(_is_str, v)), 'a list of hashtags, e.g. ["Politics"]'),
    "utm": (lambda v: isinstance(v, bool), "true or false"),
    "utm_source": (lambda v: v is None or (_is_str(v) and v.strip() != ""), "a non-empty string or null"),
    "utm_medium": (lambda v: _is_str(v) and v.strip() != "", "a non-empty string"),
    "utm_campaign": (lambda v: _is_str(v) and v.strip() != "", "a non-empty string"),
    "template": (lambda v: v is None or _is_str(v), "a template string or null"),
}


# ── what compose and measure return ──────────────────────────────────────────


@dataclass(frozen=True)
class Facet:
    """A Bluesky rich-text facet: UTF-8 byte offsets into Teaser.text."""

    kind: str  # "link" | "tag"
    start: int
    end: int
    value: str  # the full URL (link) or the tag without '#'


@dataclass(frozen=True)
class Teaser:
    network: str
    text: str  # exactly what is posted
    url: str  # the article link as posted (with UTM parameters)
    hashtags: tuple[str, ...]  # without '#', as they appear in text
    length: int  # by the network's rule
    limit: int
    facets: tuple[Facet, ...]  # links and hashtags in text
    dropped: tuple[str, ...]  # what was given up to fit, in order


# ── text ─────────────────────────────────────────────────────────────────────


def lead_sentence(lead: str) -> str:
    """The lead's first sentence (text.first_sentence), as a teaser quotes it."""
    return first_sentence(clean(lead))


# ── mentions ─────────────────────────────────────────────────────────────────

# "@handle" and "@user@instance" quoted in a story would notify those people on X and Mastodon (Bluesky links
# a mention only through a facet, which we never make). A ZERO WIDTH JOINER after the "@" breaks both networks'
# mention patterns and shows nothing: the text reads as the site wrote it, and nobody is notified. Chosen over
# "@ handle", which changes what readers see. An address (name@example.com) is left alone.
_MENTION = regex.compile(r"(?<![\w@/.])([@＠])(?=[\p{L}\p{Nd}_])")
ZWJ = "\u200d"


def quiet_mentions(text: str) -> str:
    """`text` with every @mention made inert (a ZWJ after its "@"), so that posting it notifies nobody."""
    return _MENTION.sub(lambda m: m.group(1) + ZWJ, text)


# ── hashtags ─────────────────────────────────────────────────────────────────


def hashtags(categories: Iterable[str], options: Options) -> list[str]:
    """The article's hashtags (without '#'): mapped, not denied, CamelCased, unique, at most max_hashtags."""
    if not options.hashtags:
        return []
    tags: list[str] = []
    seen: set[str] = set()
    for category in categories:
        key = clean(category).casefold()
        tag = _tag(options.hashtag_map[key]) if key in options.hashtag_map else _tag(category)
        folded = tag.casefold()
        if not tag or folded in options.deny or folded in seen:
            continue
        tags.append(tag)
        seen.add(folded)
    return tags[:options.max_hashtags]


def _tag(words: str) -> str:
    """A hashtag from words: "World News" → "WorldNews", "covid-19 vaccines" → "Covid19Vaccines", "Food &amp;
    Drink" (a feed's entity left in) → "FoodDrink"; "" if none, or only one character ("C++" would be #C)."""
    parts = _TAG_PART.findall(clean(html.unescape(words)))
    if len(parts) > 1:
        parts = [part[:1].upper() + part[1:] for part in parts]
    # A Prepend character at the end would fuse with the space after the tag into one grapheme.
    tag = _TRAILING_PREPEND.sub("", "".join(parts))
    if not regex.search(r"\p{L}", tag) or not 2 <= len(_GRAPHEME.findall(tag)) <= BLUESKY_MAX_TAG:
        return ""  # all digits, one character, or longer than any network takes as a tag
    return tag


# ── links ────────────────────────────────────────────────────────────────────


def with_utm(url: str, network_name: str, options: Options) -> str:
    """The link with our utm_source/medium/campaign (replacing any there); other parameters kept as written."""
    if not options.utm:
        return url
    parts = urlsplit(url)
    kept = [p for p in parts.query.split("&") if p and unquote_plus(p.split("=", 1)[0]).lower() not in _UTM_KEYS]
    ours = zip(_UTM_KEYS, (options.utm_source or network_name, options.utm_medium, options.utm_campaign),
               strict=True)
    query = "&".join(kept + [f"{key}={quote(value, safe='')}" for key, value in ours])
    return urlunsplit(parts._replace(query=query))


def link_label(url: str) -> str:
    """What Bluesky shows for a link: no scheme, no www., no query or fragment, at most 30 graphemes."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    host = host[4:] if host.lower().startswith("www.") else host
    label = host + ("" if parts.path == "/" else parts.path)
    graphemes = _GRAPHEME.findall(label)
    return label if len(graphemes) <= LABEL_MAX else "".join(graphemes[:LABEL_MAX - 1]) + ELLIPSIS


def _checked_url(url: str) -> str:
    url = url.strip() if isinstance(url, str) else ""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or any(
            ch.isspace() or not ch.isprintable() for ch in url):
        raise InvalidInput(f"the article link must be an http(s) URL without spaces, not {url!r}")
    return url


# ── facets ───────────────────────────────────────────────────────────────────


def _facets(text: str, url: str, shown: str) -> tuple[Facet, ...]:
    """Every link and #tag in the text, as byte offsets; the article link's label (Bluesky) links to `url`."""
    spans: list[tuple[int, int, str, str]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e, _, _ in spans)

    for match in _LINK.finditer(text):
        written = match.group()
        if written.startswith(url) and all(ch in _LINK_TRAILER for ch in written[len(url):]):
            written = url  # the article link itself, even if it happens to end like punctuation
        else:
            written = _without_trailer(written)
        spans.append((match.start(), match.start() + len(written), "link", written))
    if shown != url:
        for match in regex.finditer(regex.escape(shown), text):
            if free(match.start(), match.end()):
                spans.append((match.start(), match.end(), "link", url))
    for match in _HASHTAG.finditer(text):
        tag = match.group(1)
        if regex.search(r"\p{L}", tag) and len(_GRAPHEME.findall(tag)) <= BLUESKY_MAX_TAG \
                and free(match.start(), match.end()):
            spans.append((match.start(), match.end(), "tag", tag))
    return tuple(Facet(kind, _byte_offset(text, start), _byte_offset(text, end), value)
                 for start, end, kind, value in sorted(spans))


def _without_trailer(link: str) -> str:
    """A link written in prose, without the punctuation that ends the sentence around it."""
    while link and (link[-1] in _LINK_TRAILER or (link[-1] == ")" and link.count(")") > link.count("("))):
        link = link[:-1]
    return link


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode())


# ── composing ────────────────────────────────────────────────────────────────


def compose(network: Network, *, title: str, lead: str, url: str, categories: Iterable[str] = (),
            options: Options = Options()) -> Teaser:
    """The teaser for one article on one network, within its limit; what was given up to fit is in `dropped`.
    Never the link alone: with no headline the lead stands in for it, and a headline too long to fit at a
    word is cut at a character."""
    headline, sentence = quiet_mentions(clean(title)), quiet_mentions(lead_sentence(lead))
    tags = hashtags(categories, options)
    if headline == UNTITLED or not headline:
        headline, sentence = sentence, ""
    link = with_utm(_checked_url(url), network.name, options)
    shown = link_label(link) if network.name == "bluesky" else link

    def attempt(headline: str, sentence: str, tags: list[str]) -> str | None:
        text = _render(network, options, title=headline, lead=sentence, url=shown, hashtags=tags)
        return text if fits(network, text) else None

    def done(text: str, dropped: list[str]) -> Teaser:
        return _teaser(network, text, link, shown, dropped)

    # 1. hashtags, the last one first
    for kept in range(len(tags), -1, -1):
        if text := attempt(headline, sentence, tags[:kept]):
            return done(text, ["hashtags"] if kept < len(tags) else [])
    dropped = ["hashtags"] if tags else []
    if sentence:
        # 2. the lead, shortened while it still says something; 3. no lead
        text = _longest(sentence, lambda shorter: attempt(headline, shorter, []), _meaningful)
        if text:
            return done(text, dropped + ["lead shortened"])
        dropped.append("lead")
        if text := attempt(headline, "", []):
            return done(text, dropped)
    if headline:
        # 4. the headline, shortened as a last resort: at a word, else at a character (one long word)
        text = (_longest(headline, lambda shorter: attempt(shorter, "", []), lambda _: True)
                or _longest(headline, lambda shorter: attempt(shorter, "", []), lambda _: True, anywhere=True))
        if text:
            return done(text, dropped + ["headline shortened"])
        dropped.append("headline")
    if not fits(network, shown):
        raise InvalidInput(f"the article link alone is {length(network, shown)} of {network.limit} characters "
                           f"by {network.display_name}'s count: use a shorter link")
    return done(shown, dropped)


def measure(network: Network, text: str, url: str) -> Teaser:
    """An editor's own teaser, checked and measured: length, facets, hashtags. Refused if it can't be posted."""
    if not text.strip():
        raise InvalidInput("the teaser is empty: write at least the article link")
    try:
        size = len(text.encode())
    except UnicodeEncodeError as e:
        raise InvalidInput("the teaser holds a broken character (a lone surrogate): retype it") from e
    count = length(network, text)
    if count > network.limit:
        raise InvalidInput(f"{count} of {network.limit} characters by {network.display_name}'s count: "
                           f"shorten it by {count - network.limit}")
    if network.name == "bluesky" and size > BLUESKY_MAX_BYTES:
        raise InvalidInput(f"{size} of {BLUESKY_MAX_BYTES} bytes (UTF-8) by Bluesky's count: "
                           f"shorten it by {size - BLUESKY_MAX_BYTES} bytes")
    shown = link_label(url) if network.name == "bluesky" else url
    if shown not in text and url not in text:
        raise InvalidInput(f"the article link is missing from the teaser: keep {shown} in it")
    return _teaser(network, text, url, shown, [])


def _teaser(network: Network, text: str, url: str, shown: str, dropped: list[str]) -> Teaser:
    facets = _facets(text, url, shown)
    tags = tuple(dict.fromkeys(facet.value for facet in facets if facet.kind == "tag"))
    return Teaser(network.name, text, url, tags, length(network, text), network.limit, facets, tuple(dropped))


def _render(network: Network, options: Options, **context) -> str:
    context["hashtags"] = ["#" + tag for tag in context["hashtags"]]
    if options.template is None:
        text = render(f"social/{network.name}.txt", **context)
    else:
        try:
            text = _editor_template(options.template).render(**context)
        except Exception as e:  # an editor's template can fail in any way Python can
            raise InvalidInput(f"the teaser template could not be rendered: {e}") from e
        if context["url"] not in text:
            raise InvalidInput("the teaser template must show the link: put {{ url }} in it")
    return _tidy(text)


@lru_cache(maxsize=64)
def _editor_template(source: str):
    """An editor's template, compiled in the sandbox; refused if it can't compile or never shows the link."""
    try:
        variables = meta.find_undeclared_variables(sandbox().parse(source))
        template = sandbox().from_string(source)
    except Exception as e:
        raise InvalidInput(f"the teaser template is not valid: {e}") from e
    if "url" not in variables:
        raise InvalidInput("the teaser template must show the link: put {{ url }} in it")
    return template


def _tidy(text: str) -> str:
    """No trailing spaces, no run of blank lines, none at either end: what an absent lead or tag leaves."""
    lines: list[str] = []
    for line in text.split("\n"):
        line = line.rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip()


def _longest(text: str, attempt: Callable[[str], str | None], enough: Callable[[str], bool],
             anywhere: bool = False) -> str | None:
    """The teaser with the longest word-prefix of `text` + "…" that fits and is `enough`, found by bisection;
    `anywhere`: the longest prefix cut between any two characters (graphemes), for a text with no room at a word."""
    graphemes = _GRAPHEME.findall(text)
    in_links = _in_links(graphemes)
    cuts = [cut for cut in (range(1, len(graphemes)) if anywhere else _cuts(graphemes)) if cut not in in_links]
    # Keep only the cuts that leave enough (a monotone test: more words, more said), then bisect on the fit.
    low = _first(len(cuts), lambda i: (shorter := _shortened(graphemes, cuts[i])) is not None and enough(shorter))
    best, high = None, len(cuts) - 1
    while low <= high:
        middle = (low + high) // 2
        shorter = _shortened(graphemes, cuts[middle])
        fitted = attempt(shorter) if shorter is not None else None
        if fitted is None:
            high = middle - 1
        else:
            best, low = fitted, middle + 1
    return best


def _first(n: int, ok: Callable[[int], bool]) -> int:
    """The first index in range(n) where `ok` holds, for an `ok` that stays true once true (n if none)."""
    low, high = 0, n
    while low < high:
        middle = (low + high) // 2
        if ok(middle):
            high = middle
        else:
            low = middle + 1
    return low


def _cuts(graphemes: list[str]) -> list[int]:
    """Where a text may be cut, in graphemes: before a space, or between two CJK/kana/hangul characters."""
    cuts = []
    for i in range(1, len(graphemes)):
        here, before = graphemes[i], graphemes[i - 1]
        if here[0].isspace() and not before[0].isspace():
            cuts.append(i)
        elif _CJK.match(here) and _CJK.match(before):
            cuts.append(i)
    return cuts


# A link in a headline or lead, with or without its protocol (X links a bare domain), is never cut: a cut link
# leads nowhere, and the "…" after it would become part of it on Mastodon.
_LINKISH = regex.compile(r"(?<!\S)\S*(?:://|[\p{L}\p{N}]\.\p{L}{2,})\S*")  # from a word's start: linear


def _in_links(graphemes: list[str]) -> set[int]:
    """The cuts (grapheme indices) that would fall inside a link, or right after one with a protocol (on
    Mastodon "…" may end such a link; X and Mastodon link no bare domain's "…")."""
    text = "".join(graphemes)
    if "." not in text and "://" not in text:
        return set()
    starts = list(itertools.accumulate((len(g) for g in graphemes), initial=0))  # where each grapheme starts
    inside = set()
    for found in _LINKISH.finditer(text):
        first = bisect.bisect_right(starts, found.start())
        last = bisect.bisect_right(starts, found.end()) if "://" in found.group() else bisect.bisect_left(
            starts, found.end())
        inside.update(range(first, last))
    return inside


def _shortened(graphemes: list[str], cut: int) -> str | None:
    """The first `cut` graphemes + "…", trailing punctuation trimmed; None when nothing is left."""
    kept = graphemes[:cut]
    # Also drop a grapheme that would fuse with the ellipsis (a Prepend character before it).
    while kept and (kept[-1].isspace() or kept[-1] in _TRIMMED or len(_GRAPHEME.findall(kept[-1] + ELLIPSIS)) < 2):
        kept.pop()
    return "".join(kept) + ELLIPSIS if kept else None


def _meaningful(lead: str) -> bool:
    """Enough of a lead to be worth keeping: about six words (CJK counted two characters a word)."""
    words = lead.split()
    return sum(max(1, len(_CJK.findall(word)) // 2) for word in words) >= MIN_LEAD_WORDS
