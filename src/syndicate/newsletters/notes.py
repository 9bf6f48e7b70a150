"""An editor's own words in an edition (the intro, a blurb on a story): Markdown as typed, rendered once with
the edition into HTML that can't run anything or point anywhere but the web, and into plain text for the
text part (every link kept, as `text <address>`)."""

from __future__ import annotations

import re
import textwrap

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

from syndicate import links
from syndicate.errors import InvalidInput
from syndicate.text import CONTROL_BUT_BREAKS

# Raw HTML stays text, and pictures stay out: a remote image in an editor's note would be a tracker.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).disable(["image", "html_block", "html_inline"])
TAGS = {"p", "br", "strong", "em", "a", "ul", "ol", "li", "blockquote", "code", "pre", "h3", "h4", "hr"}
_HEADINGS = {"h1": "h3", "h2": "h3", "h3": "h3", "h4": "h4", "h5": "h4", "h6": "h4"}  # below the story headlines
WIDTH = 72  # the text part's line length, as the template wraps


def cleaned(value: str | None, limit: int, what: str) -> str | None:
    """What an editor typed, kept as written (line breaks as \\n, no other control characters); None when blank.
    Longer than `limit`: refused, saying by how much."""
    text = CONTROL_BUT_BREAKS.sub("", (value or "").replace("\r\n", "\n").replace("\r", "\n")).strip()
    if len(text) > limit:
        raise InvalidInput(f"the {what} is {len(text):,} characters; keep it to {limit:,}")
    return text or None


def _href(tag: str, attribute: str, value: str) -> str | None:
    if tag == "a" and attribute == "href":
        return links.href(value) or (value if re.fullmatch(r"mailto:[^\s<>\"]+@[^\s<>\"]+", value) else None)
    return value


def to_html(source: str | None, css_class: str = "text") -> Markup:
    """The Markdown as safe HTML for an edition: only the tags above, links only to the web (or mailto), each
    paragraph and item carrying `css_class` for the template's inlined style."""
    if not source:
        return Markup("")
    html = _MARKDOWN.render(source)
    html = re.sub(r"<(/?)h([1-6])>", lambda m: f"<{m[1]}{_HEADINGS['h' + m[2]]}>", html)
    styled = {tag: {"class": css_class} for tag in ("p", "li", "h3", "h4", "blockquote")}
    return Markup(nh3.clean(html, tags=TAGS, attributes={"a": {"href"}}, attribute_filter=_href,
                            url_schemes={"http", "https", "mailto"}, link_rel=None,
                            set_tag_attribute_values=styled | {"a": {"class": "more"}}).strip())


def to_text(source: str | None, width: int = WIDTH) -> str:
    """The Markdown as the text part shows it: paragraphs wrapped at `width`, lists with their markers, quotes
    with "> ", and each link's address after its words."""
    if not source:
        return ""
    blocks: list[tuple[str, int]] = []  # (the block, the outermost list it is in: its number, 0 for none)
    lists: list[int | None] = []  # None for a bullet list, the next number for an ordered one
    quote, marker, outermost = 0, "", 0
    for token in _MARKDOWN.parse(source):
        kind = token.type
        if kind == "blockquote_open":
            quote += 1
        elif kind == "blockquote_close":
            quote -= 1
        elif kind in ("bullet_list_open", "ordered_list_open"):
            outermost += not lists
            lists.append(None if kind == "bullet_list_open" else int(token.attrGet("start") or 1))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif kind == "list_item_open":
            marker = "- " if lists[-1] is None else f"{lists[-1]}. "
            if lists[-1] is not None:
                lists[-1] += 1
        elif kind in ("inline", "code_block", "fence", "hr"):
            prefix = "> " * quote + "  " * max(len(lists) - 1, 0)
            if kind == "inline":
                body = textwrap.fill(_inline(token.children or []), width, initial_indent=prefix + marker,
                                     subsequent_indent=prefix + " " * len(marker), break_long_words=False,
                                     break_on_hyphens=False)
            elif kind == "hr":
                body = prefix + "* * *"
            else:
                body = "\n".join(prefix + "    " + line for line in token.content.rstrip("\n").split("\n"))
            blocks.append((body, outermost if lists else 0))
            marker = ""
    text = ""
    for i, (body, in_list) in enumerate(blocks):  # the items of one list line by line, other blocks apart
        text += ("" if i == 0 else "\n" if in_list and blocks[i - 1][1] == in_list else "\n\n") + body
    return text


def words(source: str | None) -> str:
    """Only the words, on one line: for the inbox's preview line."""
    if not source:
        return ""
    blocks = [_inline(t.children or [], addresses=False) for t in _MARKDOWN.parse(source) if t.type == "inline"]
    return " ".join(" ".join(blocks).split())


def _inline(children, addresses: bool = True) -> str:
    """One paragraph's words, a link's address after its words (left out when the words are the address)."""
    out, href, words = [], "", 0
    for token in children:
        kind = token.type
        if kind in ("text", "code_inline"):
            out.append(token.content)
        elif kind == "softbreak":
            out.append(" ")
        elif kind == "hardbreak":
            out.append("\n")
        elif kind == "link_open":
            href, words = _href("a", "href", str(token.attrGet("href") or "")) or "", len(out)
        elif kind == "link_close":
            if addresses and href and "".join(out[words:]).strip() not in (href, href.removeprefix("mailto:")):
                out.append(f" <{href.removeprefix('mailto:')}>")
            href = ""
    return "".join(out)
