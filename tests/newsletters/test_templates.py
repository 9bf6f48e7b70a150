"""The default digest as mail clients get it: golden files, a faithful text part, dark mode and Outlook
scaffolding that survive premailer, the personal footer, editors' template overrides, and its size."""

from __future__ import annotations

import difflib
import email
import email.policy
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conftest import FIGURES
from syndicate import links, templating, tokens
from syndicate.delivery.copies import MessageFactory
from syndicate.errors import InvalidInput
from syndicate.models import DEFAULT_SUBJECT, Article, Edition, Newsletter
from syndicate.newsletters import rendering
from syndicate.newsletters.rendering import PREFERENCES_URL, UNSUBSCRIBE_URL

GOLDEN = Path(__file__).parents[1] / "golden"
BASE_URL = "https://news.example"
POSTAL_ADDRESS = "Example Media Ltd · 1 Quay Street · Bristol BS1 4DJ · United Kingdom"
PUBLISHED = datetime(2026, 11, 27, 18, 30, tzinfo=UTC)

ARTICLES = [
    dict(title="Zoë's café reopens in Kraków — and a sister shop opens in 東京",
         url="https://news.example/culture/zoe-cafe-krakow",
         lead=("After two years of repairs the café on Floriańska Street serves again, with the same "
               "copper counter, a new roaster in the cellar and a menu in Polish, English and Japanese. "
               "Its owner, Zoë Ødegård, says the Tokyo shop will open in the spring."),
         image_url="https://cdn.news.example/img/zoe-cafe.jpg", categories=["Culture", "Food"],
         author="Zoë Ødegård"),
    dict(title='Budget <b>vote</b> & the "fine print" nobody read',
         url="https://news.example/politics/budget?page=2&view=full",
         lead='Councillors passed the budget 31–12 on Thursday; the clause on "temporary" parking fees '
              "runs to 2031 & beyond.",
         image_url="https://cdn.news.example/img/budget.jpg?w=1072&h=600", categories=["Politics"],
         author=None),
    dict(title="Tram line 4 runs again after the storm",
         url="https://news.example/city/tram-4-back",
         lead="Crews replaced 800 metres of overhead wire in nine days. Trams run every eight minutes again; "
              "the replacement buses stop on Monday.",
         image_url=None, categories=["City"], author="Sam Park"),
    dict(title="Live: the regional election results as they come in",
         url="https://news.example/politics/election-live",
         lead="", image_url="https://cdn.news.example/img/election.jpg", categories=[], author=None),
]


def newsletter(template: str = "edition") -> Newsletter:
    return Newsletter(id=3, slug="morning", name="The Morning Briefing", from_name="The Morning Briefing",
                      from_address="briefing@news.example", reply_to=None, subject_template=DEFAULT_SUBJECT,
                      template=template, timezone="Europe/Berlin")


def edition() -> Edition:
    # 06:00 UTC is 07:00 in Berlin, the same day: the masthead shows the newsletter's own date.
    at = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    return Edition(id=41, newsletter_id=3, number=12, kind="regular", status="scheduled", scheduled_for=at,
                   cut_at=at, custom_subject=None)


def articles(specs: list[dict] = ARTICLES) -> list[Article]:
    return [Article(id=100 + i, published_at=PUBLISHED, **spec) for i, spec in enumerate(specs)]


@pytest.fixture
def settings(make_settings):
    return make_settings(base_url=BASE_URL, postal_address=POSTAL_ADDRESS)


@pytest.fixture
def rendered(settings) -> tuple[Edition, str, str]:
    """The fixed edition through the real render: Jinja2, then premailer."""
    made = edition()
    made.subject, made.html, made.text = rendering.render_edition(newsletter(), made, articles(), settings)
    return made, made.html, made.text


@pytest.fixture
def override_dir(tmp_path):
    folder = tmp_path / "editor-templates"
    folder.mkdir()
    yield folder
    templating.use_template_dir(None)  # the override is process-wide: never leak it into other tests


class Page(HTMLParser):
    """Links, images and (tag, class, style) of everything in a rendered page."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.images: list[dict] = []
        self.elements: list[tuple[str, str, str]] = []
        self.text_of: dict[str, list[str]] = {}
        self._open: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if "href" in attributes:
            self.hrefs.append(attributes["href"])
        if tag == "img":
            self.images.append(attributes)
        self.elements.append((tag, attributes.get("class") or "", attributes.get("style") or ""))
        if tag not in ("img", "meta", "br"):
            self._open.append(attributes.get("class") or tag)

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        if self._open:
            self.text_of.setdefault(self._open[-1], []).append(data)

    def styles(self, cls: str) -> list[str]:
        return [style for _, classes, style in self.elements if cls in classes.split()]


def declarations(style: str) -> set[str]:
    """'color: #fff; margin:0 auto' → {'color:#fff', 'margin:0 auto'}: comparable whoever wrote the style."""
    return {re.sub(r"\s*([:,])\s*", r"\1", d.strip()) for d in style.split(";") if d.strip()}


# ── golden files ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize("part", ["html", "txt"])
def test_the_default_edition_renders_exactly_as_its_golden_file(rendered, part, request):
    _, html, text = rendered
    body = (html if part == "html" else text).encode("utf-8")
    golden = GOLDEN / f"edition.{part}"
    if part == "html":
        FIGURES.append(f"golden edition.html (4 stories): {len(body):,} bytes")
    if request.config.getoption("--update-golden"):
        GOLDEN.mkdir(exist_ok=True)
        changed = not golden.exists() or golden.read_bytes() != body
        golden.write_bytes(body)
        pytest.skip(f"--update-golden: rewrote tests/golden/{golden.name} "
                    f"({'changed' if changed else 'unchanged'}); review the diff before committing it")
    assert golden.exists(), f"{golden} is missing; create it with pytest --update-golden"
    expected = golden.read_bytes()
    if body != expected:
        diff = difflib.unified_diff(expected.decode().splitlines(), body.decode().splitlines(),
                                    f"golden/edition.{part}", "rendered", lineterm="", n=2)
        shown = "\n".join(list(diff)[:80])
        pytest.fail(f"edition.{part} differs from its golden file (if the change is meant, run "
                    f"pytest --update-golden and review the diff):\n{shown}", pytrace=False)


# ── the text part ────────────────────────────────────────────────────────────


def test_every_link_of_the_html_part_is_in_the_text_part(rendered):
    _, html, text = rendered
    hrefs = set(Page(html).hrefs)

    assert {a["url"] for a in ARTICLES} | {UNSUBSCRIBE_URL, PREFERENCES_URL} <= hrefs
    assert {f"{BASE_URL}/n/morning/12", f"{BASE_URL}/n/morning"} <= hrefs  # view in browser, archive
    missing = sorted(href for href in hrefs if href not in text)
    assert missing == []


def test_the_text_part_is_plain_wrapped_text_with_the_same_stories(rendered):
    _, _, text = rendered

    assert not re.search(r"&(#\d+|#x[0-9a-f]+|[a-z]+);", text, re.I), "HTML entities in the text part"
    assert 'Budget <b>vote</b> & the "fine print" nobody read' in text  # as the feed wrote it, unescaped
    for line in text.splitlines():
        assert len(line) <= 72 or re.fullmatch(r"https?://\S+", line), line
    flat = " ".join(text.split())
    for spec in ARTICLES:
        assert " ".join(spec["title"].split()) in flat
        if spec["lead"]:
            assert " ".join(spec["lead"].split()) in flat  # wrapped, not cut
    assert "Saturday, November 28, 2026 · No. 12 · 4 stories" in text
    assert "CULTURE\n" in text and "By Zoë Ødegård" in text
    assert POSTAL_ADDRESS in flat
    assert text.endswith("\n") and not text.endswith("\n\n")


# ── the editor's own words ───────────────────────────────────────────────────

INTRO = """Good *morning*. Three things **today**:

- the [café](https://news.example/culture/zoe-cafe-krakow) is back
- a [trap](javascript:alert(1)) and <script>alert(1)</script> and ![pixel](https://track.example/p.gif)

Write to [the desk](mailto:desk@news.example)."""


def test_an_intro_blurbs_and_a_sponsor_are_rendered_safe_in_html_and_as_text(settings):
    made = edition()
    made.intro = INTRO
    made.sponsor_text, made.sponsor_url = "Bristol Bikes: a week's hire free <b>now</b>", "https://bikes.example/?a=1&b=2"
    stories = articles()
    made.subject, html, text = rendering.render_edition(newsletter(), made, stories, settings, blurbs={
        stories[1].id: "Read the **fine print** before [the vote](https://news.example/politics/fine-print)."})
    page = Page(html)

    assert "Good <em>morning</em>" in html and "<strong>today</strong>" in html
    assert "<script" not in html and not [h for h in page.hrefs if not h.startswith(("https:", "mailto:"))]
    assert "https://track.example/p.gif" not in {i.get("src") for i in page.images}  # no picture: a tracker
    assert "&lt;script&gt;" in html  # typed HTML stays text
    assert {"https://news.example/politics/fine-print", "mailto:desk@news.example",
            "https://bikes.example/?a=1&b=2"} <= set(page.hrefs)
    assert "".join(page.text_of["preheader"]).startswith("Good morning. Three things today: the café is back a")
    body = html[html.index("<body"):]
    assert body.index("Good <em>morning</em>") < body.index("Kraków —") < body.index("fine print</strong>") \
        < body.index("Councillors") < body.index("Sponsored") < body.index("Unsubscribe")
    assert "Bristol Bikes: a week's hire free &lt;b&gt;now&lt;/b&gt;" in html
    assert all("font-family" in style for style in page.styles("text"))  # inlined, like the stories
    # The text part: the same words, every link after its words, nothing of HTML.
    assert "Good morning. Three things today:\n\n- the café <https://news.example/culture/zoe-cafe-krakow> is back" \
        in text
    assert "Read the fine print before the vote\n<https://news.example/politics/fine-print>." in text \
        or "the vote <https://news.example/politics/fine-print>." in text
    assert "SPONSORED\nBristol Bikes: a week's hire free <b>now</b>\nhttps://bikes.example/?a=1&b=2" in text
    assert "Write to the desk <desk@news.example>." in text
    missing = sorted(href for href in set(page.hrefs) if href.removeprefix("mailto:") not in text)
    assert missing == []
    for line in text.splitlines():
        assert len(line) <= 72 or re.fullmatch(r"<?https?://\S+", line), line


def test_the_web_view_leaves_out_a_withdrawn_storys_blurb(settings):
    made = edition()
    stories = articles()
    made.html = rendering.render_html(newsletter(), made, stories, settings, "Subject",
                                      {stories[0].id: "Our favourite: the cafe"})
    assert "Our favourite: the cafe" in made.html
    left = rendering.render_html(newsletter(), made, stories[1:], settings, "Subject",
                                 {stories[0].id: None})
    assert "Our favourite" not in left


# ── the html part ────────────────────────────────────────────────────────────


def test_titles_from_feeds_are_escaped_in_the_html_part(rendered):
    _, html, _ = rendered
    page = Page(html)

    assert "<b>vote</b>" not in html
    assert "Budget &lt;b&gt;vote&lt;/b&gt; &amp; the" in html
    assert 'Budget <b>vote</b> & the "fine print" nobody read' in "".join(page.text_of["headline-link"])
    assert "https://news.example/politics/budget?page=2&view=full" in page.hrefs
    assert 'href="https://news.example/politics/budget?page=2&amp;view=full"' in html


# Feed titles: any printable text, with the characters HTML cares about made likely.
TITLES = st.text(st.one_of(st.sampled_from(' <>&"\'=/;#-'),
                           st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn"))), min_size=1, max_size=120)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=TITLES)
def test_any_title_comes_out_as_the_same_text_in_both_parts(settings, title):
    story = dict(ARTICLES[0], title=title, url="https://news.example/a?b=1&c=<2>")
    _, html, text = rendering.render_edition(newsletter(), edition(), articles([story]), settings)
    page = Page(html)

    assert "".join(page.text_of["headline-link"]) == title
    assert [i["alt"] for i in page.images] == [title]
    assert " ".join(title.split()) in " ".join(text.split())  # wrapped at 72, never cut or escaped
    link = links.web_link(story["url"])  # as a URI: "<" and ">" percent-encoded
    assert link == "https://news.example/a?b=1&c=%3C2%3E"
    assert link in text and link in page.hrefs


def test_the_preheader_is_the_first_lead_hidden_and_padded_before_the_masthead(rendered):
    _, html, _ = rendered
    first_lead = ARTICLES[0]["lead"]
    preheader = re.search(r'<div class="preheader"[^>]*>(.*?)</div>', html, re.S)

    assert preheader is not None
    assert preheader.start() < html.index('class="masthead-title"')
    assert "display: none" in preheader.group(0) and "mso-hide: all" in preheader.group(0)
    content = preheader.group(1)
    assert content.startswith(first_lead[:120])
    assert content.count("\u200c\u00a0") + content.count("&zwnj;&nbsp;") >= 80  # the padding


def test_images_carry_the_title_as_alt_text_and_render_as_blocks(rendered):
    _, html, _ = rendered
    images = Page(html).images
    with_image = [a for a in ARTICLES if a["image_url"]]

    assert [i["src"] for i in images] == [a["image_url"] for a in with_image]
    assert [i["alt"] for i in images] == [a["title"] for a in with_image]  # parsed: escaped in the source
    for image in images:
        assert image["width"] == "536"  # Outlook sizes by the attribute
        assert "height" not in image  # unknown: a guessed one would distort the picture
        assert {"display:block", "border:0", "width:100%", "max-width:536px", "height:auto"} <= declarations(
            image["style"])


def test_the_html_part_works_from_inline_styles(rendered):
    _, html, _ = rendered
    page = Page(html)

    for cls, must in [("masthead-title", "color:#1d1d1b"), ("headline-link", "color:#1d1d1b"),
                      ("headline", "font-family:Georgia,Times,serif"), ("lead", "font-size:16px"),
                      ("kicker", "color:#b3261e"), ("more", "color:#b3261e"), ("story", "padding:26px 32px"),
                      ("footer-link", "color:#5f5e59"), ("container", "max-width:600px"),
                      ("wrapper", "background-color:#f3f1ec")]:
        styles = page.styles(cls)
        assert styles and all(must in declarations(style) for style in styles), (cls, styles)
    assert 'class="container" width="100%"' in html and 'bgcolor="#ffffff"' in html
    assert html.count('class="story"') == len(ARTICLES)
    assert html.count('class="kicker"') == 3  # the story without categories has no kicker
    assert html.count('class="lead"') == 3  # nor does the story without a lead have an empty paragraph
    assert html.count("Read the story") == len(ARTICLES)


def test_dark_mode_and_outlook_scaffolding_survive_premailer(rendered):
    _, html, _ = rendered
    styles = re.findall(r"<style[^>]*>(.*?)</style>", html, re.S)

    assert '<meta name="color-scheme" content="light dark">' in html
    assert '<meta name="supported-color-schemes" content="light dark">' in html
    dark = next(s for s in styles if "prefers-color-scheme: dark" in s)
    assert "color: #ecebe6 !important" in dark  # premailer would have stripped !important from a leftover rule
    outlook_com = next(s for s in styles if "[data-ogsc]" in s)
    assert "[data-ogsb] .container" in outlook_com and "prefers-color-scheme" not in outlook_com
    responsive = next(s for s in styles if "max-width: 620px" in s)
    assert "[" not in responsive  # Gmail drops a whole block for one attribute selector
    assert "data-premailer" not in html
    assert '<!--[if mso]><table role="presentation" align="center" width="600"' in html
    assert html.count("<![endif]-->") >= 3
    assert 'role="presentation"' in html and "<div" not in html.split('class="preheader"', 1)[1]


# ── the personal footer: the web view and the message each recipient gets ───


def test_the_public_web_view_has_no_ones_personal_links(rendered, settings):
    made, html, _ = rendered
    public = rendering.public_html(made, settings)
    hrefs = Page(public).hrefs

    assert "<!--personal-->" in html and "<!--/personal-->" in html  # premailer kept the markers
    assert UNSUBSCRIBE_URL not in public and PREFERENCES_URL not in public and "syndicate.invalid" not in public
    assert not any("/u/" in href or "/p/" in href for href in hrefs)
    assert "Unsubscribe" not in public and "Manage preferences" not in public and "you subscribed" not in public
    assert "<!--public-->" not in public and "Subscribe to" in public  # the template's public lines instead
    assert f"{BASE_URL}/" in hrefs
    assert {a["url"] for a in ARTICLES} <= set(hrefs) and f"{BASE_URL}/n/morning/12" in hrefs


def test_each_recipient_gets_their_own_links_and_the_postal_address_in_both_parts(rendered, settings):
    made, _, _ = rendered
    factory = MessageFactory(settings, newsletter(), made)

    message = email.message_from_bytes(factory(501, 7, "reader@example.org", "Ada Lovelace").data,
                                       policy=email.policy.default)

    unsubscribe = f"{BASE_URL}/u/{tokens.unsubscribe_token(settings.secret_key, 7, 3)}"
    preferences = f"{BASE_URL}/p/{tokens.preferences_token(settings.secret_key, 7)}"
    plain, html = message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()
    assert unsubscribe in plain and preferences in plain
    assert set(Page(html).hrefs) >= {unsubscribe, preferences}
    assert "syndicate.invalid" not in plain + html
    assert "Subscribe to" not in html and "<!--public-->" not in html  # the web view's lines stay out
    assert POSTAL_ADDRESS in " ".join(plain.split()) and POSTAL_ADDRESS in html
    assert f"<{unsubscribe}>" in message["List-Unsubscribe"]


# ── editors' templates ───────────────────────────────────────────────────────


def test_a_template_in_the_editors_folder_wins_over_the_bundled_one(settings, override_dir):
    (override_dir / "email" / "edition").mkdir(parents=True)
    (override_dir / "email" / "edition" / "body.html").write_text(
        '{% extends "email/base.html" %}{% block content %}<tr><td class="story">Our own layout: '
        "{{ articles | map(attribute='title') | join(' / ') }}</td></tr>{% endblock %}", encoding="utf-8")

    bundled = rendering.render_edition(newsletter(), edition(), articles(), settings)
    templating.use_template_dir(override_dir)
    _, html, text = rendering.render_edition(newsletter(), edition(), articles(), settings)

    assert "Our own layout: Zoë's café" in html and 'class="masthead-title"' not in html
    assert "Our own layout" not in bundled[1]
    assert text == bundled[2]  # body.txt isn't overridden: the bundled one is used
    templating.use_template_dir(None)
    assert rendering.render_edition(newsletter(), edition(), articles(), settings) == bundled


def test_a_newsletter_can_use_a_template_that_only_the_editors_folder_has(settings, override_dir):
    folder = override_dir / "email" / "compact"
    folder.mkdir(parents=True)
    (folder / "body.html").write_text('{% extends "email/base.html" %}{% block content %}{% for a in articles %}'
                                      '<tr><td><a href="{{ a.url }}">{{ a.title }}</a></td></tr>{% endfor %}'
                                      "{% endblock %}", encoding="utf-8")
    (folder / "body.txt").write_text("{% for a in articles %}* {{ a.title }} {{ a.url }}\n{% endfor %}",
                                     encoding="utf-8")
    with pytest.raises(InvalidInput, match="no template"):
        rendering.check_template("compact")

    templating.use_template_dir(override_dir)
    rendering.check_template("compact")
    _, html, text = rendering.render_edition(newsletter("compact"), edition(), articles(), settings)

    assert "Budget &lt;b&gt;vote&lt;/b&gt;" in html and 'class="masthead"' not in html
    assert text.startswith("* Zoë's café reopens in Kraków")


# ── size ─────────────────────────────────────────────────────────────────────


def test_a_twenty_story_edition_stays_well_under_gmails_clipping_size(settings):
    long_lead = ("A lead as long as the ingest allows, two sentences of it, with the kind of detail a reader "
                 "wants before deciding to click: who, what, where, when and how much it costs. " * 3)[:400]
    specs = [dict(title=f"Story {i}: a headline of a realistic length for a regional news site's front page",
                  url=f"https://news.example/section/2026/11/28/story-{i}-with-a-long-descriptive-slug-for-seo",
                  lead=long_lead, image_url=f"https://cdn.news.example/images/2026/11/story-{i}-1200x675.jpg",
                  categories=["Politics", "Region"], author="A. Reporter") for i in range(20)]

    _, html, text = rendering.render_edition(newsletter(), edition(), articles(specs), settings)

    size = len(html.encode("utf-8"))
    FIGURES.append(f"default edition, 20 stories with 400-character leads: {size:,} bytes HTML "
                   f"({size / rendering.GMAIL_CLIPS_AT:.0%} of Gmail's 102 KB clip), "
                   f"{len(text.encode()):,} bytes text")
    # Worst case: every story with an image, an author and a 400-character lead; most editions are smaller.
    assert size < 0.6 * rendering.GMAIL_CLIPS_AT
