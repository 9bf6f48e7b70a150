"""Article content: sanitised HTML and a clean lead for digests and teasers."""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser
from urllib.parse import urljoin

import nh3

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
# Furniture inside the story: skipped, the story goes on after it.
NOT_STORY = re.compile(r"^(advertisement|\(?(photo|image|picture)( credit)?s?:.{0,120})$", re.IGNORECASE)
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


def lead(html: str, max_sentences: int = 2, max_chars: int = 400) -> str:
    """The first sentences of the story, boilerplate removed."""
    chosen: list[str] = []
    for block in story_text(html):
        for sentence in sentences(block):
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
