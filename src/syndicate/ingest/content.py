"""Article content: sanitised HTML and a clean lead for digests and teasers."""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import unescape
from html.parser import HTMLParser
from urllib.parse import urljoin

import nh3
import regex

from syndicate.text import join_sentences, sentences, shorten

# Where the story ends on a WordPress-style site: a block starting with one of these,
# and everything after it, is the site's furniture, not the story.
BOILERPLATE = (
    r"source link", r"leave a (reply|comment)", r"\d+ comments?", r"comments? (are )?closed",
    r"related( posts| stories| articles)?:?$", r"you (may|might) also like", r"more from ",
    r"share (this|on)", r"like this:?", r"click to (share|print|email)", r"tweet this",
    r"subscribe (to|for|now)", r"sign up (for|to)", r"follow us", r"join our (newsletter|mailing list)",
    r"the post .+ appeared first on", r"this (post|article) (was )?(first|originally) (appeared|published)",
    r"originally published (at|on|in)", r"continue reading", r"read (more|the (full|rest of the) story)",
    r"about the author", r"i['’]m .{1,80}, the author behind", r"filed under:?", r"tags?:",
)
END_OF_STORY = re.compile(r"^(" + "|".join(BOILERPLATE) + r")", re.IGNORECASE)
# The same furniture run into the story's last paragraph ("… stay informed. Source link I'm X, the author
# behind …"), as a page's text or a plain-text feed gives it: the story ends where one of these starts a
# sentence. Written as sites write them (capitalised), and after a sentence's end — except the markers no
# story says in passing, which end it wherever they stand.
_RUN_IN_END = regex.compile(
    r"(?<=\s)(?:Source link|Leave a (?:Reply|Comment)|The post .{1,300}? appeared first on|I['’]m .{1,80}, the "
    r"author behind|Click to (?:share|print|email)|Filed under:|Share this:|Like this:)"
    r"|(?<=[.!?…”\"’)]\s+)(?:Continue reading|Read (?:more|the (?:full|rest of the) story)\b|Related(?: posts| "
    r"stories| articles)?:|You (?:may|might) also like|About the author|Subscribe (?:to|for|now)\b|Sign up (?:for|to)\b"
    r"|This (?:post|article) (?:was )?(?:first|originally) (?:appeared|published)|Originally published (?:at|on|in))"
)
_WORDS = regex.compile(r"[\p{L}\p{N}]")
# Furniture inside the story: skipped, the story goes on after it.
NOT_STORY = re.compile(r"^(advertisement|\(?(photo|image|picture)( credit)?s?:.{0,120})$", re.IGNORECASE)
_RUN_IN_AD = regex.compile(r"(?<=[.!?”\"’]) +(?:ADVERTISEMENT|Advertisement|Story continues below advertisement)"
                           r"(?= +[\p{Lu}\p{N}“\"])")
# What a page puts above the story's first sentence: a section label, the headline again, the byline, the date.
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?"
          r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_DATE = (rf"(?:(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day,?\s+)?(?:{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
         rf"|\d{{1,2}}\.?\s+{_MONTH},?\s+\d{{4}}|\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}/\d{{1,2}}/\d{{2,4}})"
         r"(?:,?\s+(?:at\s+)?\d{1,2}[:.]\d{2}(?:\s*[ap]\.?m\.?)?(?:\s+\p{Lu}{2,5}\b)?)?")
_DATE_LINE = regex.compile(rf"(?:(?:Published|Updated|Posted|Last updated)(?: on)?:?\s+)?{_DATE}\s*")
_NAME = r"\p{Lu}[\p{L}\p{M}.'’-]*(?:\s+(?:\p{Lu}[\p{L}\p{M}.'’-]*|de|da|di|van|von|der|den|la|le|bin|al-\p{L}+)){0,4}"
# "By Jane Doe, Senior Correspondent | May 5, 2026": a byline in a block of its own, or run into the first
# paragraph — then only up to a separator (and the date after it): "By Jane Doe The council…" can't be split.
_BY = rf"(?:By|BY|Von|Par|Por|Door)\s+{_NAME}(?:\s+(?:and|&|und|et|y)\s+{_NAME})?"
_PHRASE = r"[^|•·—–.!?\s][^|•·—–.!?]{0,59}"  # a role or a place between separators: no sentence in it
_BYLINE = regex.compile(rf"{_BY}(?:\s*,\s*{_PHRASE})?(?:\s*[|•·—–]\s*(?:{_DATE_LINE.pattern}|{_PHRASE}))*")
_BYLINE_RUN_IN = regex.compile(rf"{_BY}(?:\s*,\s*[^|•·—–.!?]{{1,60}}?)?\s*[|•·—–]\s*(?:{_DATE_LINE.pattern})?")
# "WASHINGTON (AP) — ", "LONDON, May 5 (Reuters) - ", "May 5, 2026 — ": where a wire story starts.
_DATELINE = regex.compile(
    r"(?:\p{Lu}[\p{Lu}\p{M}'’.]+(?:[ -]\p{Lu}[\p{Lu}\p{M}'’.]+)*(?:,\s*[\p{L}\p{N} .]{2,30}?)?"
    r"(?:\s*\([\p{L} .]{2,25}\))?"
    r"|\p{Lu}[\p{L} .'’]{1,30}?\s*\((?:AP|Reuters|AFP|dpa|UPI|Bloomberg|CNN|AAP|PA|Kyodo|Xinhua|EFE|ANSA|ANP)\)"
    rf"|{_DATE})\s*[—–-]{{1,2}}\s+(?=[\p{{Lu}}\p{{N}}“\"‘])"
)
# WordPress ends excerpts with "[…]" or "[...]".
EXCERPT_MARK = re.compile(r"\s*\[(…|\.\.\.|&#8230;)\]\s*$")
BLOCK_TAGS = {
    "p", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
    "br", "section", "article", "figure", "figcaption", "table", "tr", "pre", "hr", "header",
    "footer", "aside", "nav",
}
SKIP_TAGS = {"script", "style", "noscript", "template", "figcaption"}


def sanitise(html: str, base_url: str | None = None) -> str:
    """Feed HTML is hostile: keep the markup a story needs and nothing that runs.

    Relative links and image sources are made absolute against `base_url`, since
    the HTML will be read far from the page it came from.
    """
    if not base_url:
        return nh3.clean(html)

    def absolute(tag: str, attribute: str, value: str) -> str:
        return urljoin(base_url, value) if attribute in ("href", "src") else value

    return nh3.clean(html, attribute_filter=absolute)


class _FirstImage(HTMLParser):
    """The first <img> (or the one whose src is `wanted`), its alt, and the caption of the <figure> it is in."""

    def __init__(self, wanted: str | None = None):
        super().__init__(convert_charrefs=True)
        self.wanted = wanted
        self.src: str | None = None
        self.alt = ""
        self.caption: list[str] = []
        self._figures: list[bool] = []  # one per open <figure>: whether the image found is inside it
        self._captioning = 0  # inside that figure's <figcaption>

    def handle_starttag(self, tag, attrs):
        if tag == "figure":
            self._figures.append(False)
        elif tag == "figcaption" and self._figures and self._figures[-1]:
            self._captioning += 1
        elif tag == "img" and self.src is None:
            values = dict(attrs)
            src = values.get("src") or None
            if src and (self.wanted is None or src == self.wanted):
                self.src, self.alt = src, values.get("alt") or ""
                if self._figures:
                    self._figures[-1] = True

    def handle_endtag(self, tag):
        if tag == "figcaption" and self._captioning:
            self._captioning -= 1
        elif tag == "figure" and self._figures:
            self._figures.pop()

    def handle_data(self, data):
        if self._captioning:
            self.caption.append(data)


def picture(html: str, wanted: str | None = None) -> tuple[str | None, str]:
    """In one reading of the story's HTML: its first <img> that can be fetched (or the one whose src is
    `wanted`), and what the HTML says of it — the alt, else the caption of its <figure>; (None, "") when
    there is none. The words are raw text: the caller cleans them."""
    src, words = _read_image(html, wanted)
    return (src, words) if src and src.startswith(("https://", "http://")) else (None, "")


def first_image(html: str) -> str | None:
    """The first <img> of a story: its lead image when the feed names none."""
    return picture(html)[0]


def image_alt(html: str, src: str | None) -> str:
    """What the story's HTML says of its picture `src`: the <img>'s alt, else the caption of its <figure>;
    "" when the picture isn't in the story or nobody described it. Raw text: the caller cleans it."""
    return _read_image(html, src)[1] if src else ""


def _read_image(html: str, wanted: str | None) -> tuple[str | None, str]:
    if "<img" not in html:
        return None, ""
    parser = _FirstImage(wanted)
    parser.feed(html)
    if parser.src is None:
        return None, ""
    return parser.src, parser.alt.strip() or " ".join("".join(parser.caption).split())


class _Blocks(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._current: list[str] = []
        self._skipping = 0

    def _flush(self):
        text = " ".join("".join(self._current).split())
        if text:
            self.blocks.append(text)
        self._current = []

    def handle_starttag(self, tag, attrs):
        if tag in SKIP_TAGS:
            self._skipping += 1
        elif tag in BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag):
        if tag in SKIP_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in BLOCK_TAGS:
            self._flush()

    def handle_data(self, data):
        if not self._skipping:
            self._current.append(data)

    def close(self):
        super().close()
        self._flush()


def text_blocks(html: str) -> list[str]:
    """The paragraphs of an HTML fragment (or of plain text split on blank lines)."""
    if "<" not in html:
        text = unescape(html)
        return [" ".join(p.split()) for p in re.split(r"\n\s*\n|\r\n\s*\r\n", text) if p.strip()]
    parser = _Blocks()
    parser.feed(html)
    parser.close()
    return parser.blocks


def story_text(html: str, title: str = "", categories: Iterable[str] = ()) -> list[str]:
    """The story's own paragraphs: from its first sentence (after what a page puts above it: a section label,
    the headline again, a byline, a dateline) up to where the site's furniture starts, in a paragraph of its
    own or run into the story's last one."""
    story = []
    for block in text_blocks(html):
        if END_OF_STORY.match(block):
            break
        if NOT_STORY.match(block):
            continue
        block, furniture = _cut(block)
        block = EXCERPT_MARK.sub(" …", _RUN_IN_AD.sub("", block)).strip()
        if _WORDS.search(block):  # "* * *", "———": a section break, not a paragraph
            story.append(block)
        if furniture:
            break
    return _without_top_matter(story, title, categories)


def _cut(block: str) -> tuple[str, str]:
    """The block up to the furniture run into it, and that furniture ("" when there is none)."""
    found = _RUN_IN_END.search(block)
    return (block, "") if found is None else (block[:found.start()].rstrip(), block[found.start():])


def _without_top_matter(story: list[str], title: str, categories: Iterable[str]) -> list[str]:
    """The story from its first sentence. A block that is only top matter goes (a short label only when
    more follows: a story of three words is still a story); top matter run into the first paragraph is cut."""
    labels = [pattern for pattern in map(_words, [label[:TOP] for label in [title, *categories][:50]]) if pattern]
    for at, block in enumerate(story[:6]):  # top matter is a page's first few blocks
        first = _strip_top(block, labels)
        if first and not (at + 1 < len(story) and _is_label(first)):
            return [first, *story[at + 1:]]
    return story[6:]


TOP = 400  # characters: top matter is short, and a stranger's 100 KB paragraph is read once, not per pattern


def _strip_top(block: str, labels: list[regex.Pattern]) -> str:
    """`block` without the label, headline, byline and dateline it starts with, in any order."""
    for _ in range(4):  # label, headline, byline, dateline: a page has each once at most
        before, head = block, block[:TOP]
        if len(block) <= TOP and (_BYLINE.fullmatch(block) or _DATE_LINE.fullmatch(block)):
            return ""
        for pattern in (*labels, _BYLINE_RUN_IN, _DATELINE):
            found = pattern.match(head)
            if found and _starts_anew(block[found.end():]):
                block = block[found.end():].lstrip(" |•·—–-:")
                head = block[:TOP]
        if block == before:
            break
    return block


def _starts_anew(rest: str) -> bool:
    """Whether what follows a label is a new start (a capital, a number, a quote, or nothing), not the rest of
    a sentence that begins with the label's words ("World news is slow today")."""
    rest = rest.lstrip()
    if rest[:1] in ("|", "•", "·", "—", "–", "-", ":"):
        rest = rest[1:].lstrip()
    return not rest or rest[0].isupper() or rest[0].isdigit() or rest[0] in "“\"‘«„"


def _is_label(block: str) -> bool:
    """A section label or kicker ("World News", "BREAKING"): a few words, no sentence in them."""
    return len(block) <= 120 and len(block.split()) <= 5 and not regex.search(r"[.!?…。！？:;,]\W*$", block[-40:])


def _words(text: str) -> regex.Pattern | None:
    """A pattern for `text` at the start of a block, whatever the punctuation and case between its words."""
    words = regex.findall(r"[\p{L}\p{N}]+", text)
    if not words:
        return None
    return regex.compile(r"[^\p{L}\p{N}]*" + r"[^\p{L}\p{N}]+".join(map(regex.escape, words)) + r"\b",
                         regex.IGNORECASE)


def lead(html: str, max_sentences: int = 2, max_chars: int = 400, *, title: str = "",
         categories: Iterable[str] = ()) -> str:
    """The first sentences of the story, top matter and furniture left out."""
    chosen: list[str] = []
    for block in story_text(html, title, categories):
        # A lead is two sentences in 400 characters: a block is read that far (with room to see where a
        # sentence ends), not to its end — a stranger's paragraph may be megabytes long.
        for sentence in sentences(block[:max_chars * 4]):
            if chosen and len(join_sentences(chosen + [sentence])) > max_chars:
                return join_sentences(chosen)
            if not chosen and len(sentence) > max_chars:
                return shorten(sentence, max_chars)
            chosen.append(sentence)
            if len(chosen) >= max_sentences:
                return join_sentences(chosen)
    return join_sentences(chosen)


def plain_text(html: str) -> str:
    return " ".join(" ".join(text_blocks(html)).split())
