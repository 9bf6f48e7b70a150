"""Article content: sanitised HTML and a clean lead for digests and teasers."""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser
from urllib.parse import urljoin

import nh3

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
# Furniture inside the story: skipped, the story goes on after it.
NOT_STORY = re.compile(r"^(advertisement|\(?(photo|image|picture)( credit)?s?:.{0,120})$", re.IGNORECASE)
# WordPress ends excerpts with "[…]" or "[...]".
EXCERPT_MARK = re.compile(r"\s*\[(…|\.\.\.|&#8230;)\]\s*$")
# Words that end with a period without ending a sentence.
ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "gen", "gov", "sen", "rep", "lt", "col",
    "sgt", "capt", "prof", "inc", "co", "corp", "ltd", "vs", "no", "fig", "jan", "feb",
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "approx", "est",
}
# A sentence ends after . ! ? … (and closing quotes) before a space and a capital or digit,
# or after a CJK full stop, with or without a space.
SENTENCE_END = re.compile(r"(?<=[.!?…])([\"'”’)]*)\s+(?=[\"'“‘(]?[A-Z0-9])|(?<=[。！？])([」』”’)]*)\s*")
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
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.src: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "img" and self.src is None:
            self.src = dict(attrs).get("src") or None


def first_image(html: str) -> str | None:
    """The first <img> of a story: its lead image when the feed names none."""
    parser = _FirstImage()
    parser.feed(html)
    src = parser.src
    return src if src and src.startswith(("https://", "http://")) else None


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


def story_text(html: str) -> list[str]:
    """The story's own paragraphs, up to where the site's boilerplate starts."""
    story = []
    for block in text_blocks(html):
        if END_OF_STORY.match(block):
            break
        if NOT_STORY.match(block):
            continue
        block = EXCERPT_MARK.sub(" …", block).strip()
        if block:
            story.append(block)
    return story


def sentences(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for match in SENTENCE_END.finditer(text):
        closing = match.group(1) or match.group(2) or ""
        candidate = text[start : match.start() + len(closing)].strip()
        if not candidate:
            continue
        last_word = candidate.rstrip(".!?…\"'”’)").rsplit(" ", 1)[-1]
        # "U.S. officials", "Dr. Smith", "J. Doe": not the end of a sentence.
        if last_word.lower() in ABBREVIATIONS or "." in last_word or (len(last_word) == 1 and last_word.isalpha()):
            continue
        out.append(candidate)
        start = match.end()
    rest = text[start:].strip()
    if rest:
        out.append(rest)
    return out


def lead(html: str, max_sentences: int = 2, max_chars: int = 400) -> str:
    """The first sentences of the story, boilerplate removed."""
    chosen: list[str] = []
    for block in story_text(html):
        for sentence in sentences(block):
            if chosen and len(_join(chosen + [sentence])) > max_chars:
                return _join(chosen)
            if not chosen and len(sentence) > max_chars:
                return shorten(sentence, max_chars)
            chosen.append(sentence)
            if len(chosen) >= max_sentences:
                return _join(chosen)
    return _join(chosen)


def _join(sentences: list[str]) -> str:
    """Sentences joined as written: a space after Latin punctuation, none after a CJK full stop."""
    text = ""
    for sentence in sentences:
        text += sentence if not text or text[-1] in "。！？」』" else " " + sentence
    return text


def shorten(text: str, max_chars: int) -> str:
    """At most `max_chars`, cut at a space when there is one (CJK has none), with an ellipsis."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    if " " in cut[max_chars // 2:]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:—-") + "…"


def plain_text(html: str) -> str:
    return " ".join(" ".join(text_blocks(html)).split())
