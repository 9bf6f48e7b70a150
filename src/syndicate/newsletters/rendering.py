"""edition → bytes, once: the subject, the HTML (CSS inlined, offline) and the text of an edition, the web
view and the preview files. Per-recipient links are placeholders here, filled in at send (delivery)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import cssutils
from jinja2 import TemplateError
from lxml import html as lxml_html
from premailer import Premailer

from syndicate import links, private_files, templating
from syndicate.config import Settings
from syndicate.errors import InvalidInput
from syndicate.models import (
    Article,
    Edition,
    Newsletter,
    utcnow,
)
from syndicate.newsletters import notes
from syndicate.templating import render, sandbox
from syndicate.text import one_line

SAMPLE_ARTICLE = Article(title="A headline", url="https://example.com/story", lead="A lead.", categories=["News"],
                         published_at=datetime(2026, 1, 1, tzinfo=UTC))


def check_subject_template(template: str) -> None:
    """Refuse a subject template that can't render, when the editor types it, not at 07:00."""
    newsletter = Newsletter(name="Newsletter", slug="newsletter")
    edition = Edition(number=1)
    try:
        sandbox().from_string(template).render(top=SAMPLE_ARTICLE, rest=2, articles=[SAMPLE_ARTICLE] * 3,
                                               newsletter=newsletter, edition=edition)
    except TemplateError as e:
        raise InvalidInput(f"the subject template doesn't work: {e}; "
                           "e.g. \"{{ top.title }}{% if rest %} and {{ rest|plural('more story', 'more stories') }}"
                           "{% endif %}\"") from e


def check_template(name: str) -> None:
    missing = [f"email/{name}/{part}" for part in ("body.html", "body.txt") if not templating.exists(
        f"email/{name}/{part}")]
    if missing:
        raise InvalidInput(f"no template {', '.join(missing)}; put it in SYNDICATE_TEMPLATE_DIR, "
                           "or use the bundled 'edition'")


def web_url(settings: Settings, newsletter: Newsletter, edition: Edition) -> str:
    return f"{settings.base_url}/n/{newsletter.slug}/{edition.number}"


def render_subject(newsletter: Newsletter, edition: Edition, articles: list[Article]) -> str:
    try:
        subject = sandbox().from_string(newsletter.subject_template).render(
            top=articles[0], rest=len(articles) - 1, articles=articles, newsletter=newsletter, edition=edition,
        )
    except TemplateError as e:
        raise InvalidInput(f"the subject template of {newsletter.slug!r} is broken: {e}") from e
    return one_line(subject)[:300] or newsletter.name


# Rendered into every edition once; replaced per recipient by their own signed links (delivery).
UNSUBSCRIBE_URL = "https://syndicate.invalid/unsubscribe-url"
PREFERENCES_URL = "https://syndicate.invalid/preferences-url"
PUBLIC_ONLY = re.compile(r"<!--public-->.*?<!--/public-->", re.S)  # lines only the public web view shows
GMAIL_CLIPS_AT = 102 * 1024  # bytes of HTML; Gmail shows "[Message clipped]" beyond this
PERSONAL = re.compile(r"<!--personal-->.*?<!--/personal-->", re.S)  # the recipient's own links


def render_context(newsletter: Newsletter, edition: Edition, articles: list[Article], settings: Settings,
                   subject: str, blurbs: dict[int, str] | None = None, more: int = 0) -> dict:
    """What the edition templates see. Per-recipient links are placeholders, filled in at send. The editor's
    own words (the intro, `blurbs` by article id, the sponsor) come as safe HTML and as text; a template that
    doesn't show them renders as before."""
    blurbs = {article_id: blurb for article_id, blurb in (blurbs or {}).items() if blurb}
    sponsor_url = links.href(edition.sponsor_url)
    return dict(
        intro=notes.to_html(edition.intro), intro_text=notes.to_text(edition.intro),
        blurbs={article_id: notes.to_html(blurb) for article_id, blurb in blurbs.items()},
        blurb_texts={article_id: notes.to_text(blurb) for article_id, blurb in blurbs.items()},
        sponsor=dict(text=edition.sponsor_text, url=sponsor_url) if edition.sponsor_text else None,
        newsletter=newsletter, edition=edition, articles=articles, subject=subject,
        # The date readers see is the newsletter's own, not UTC's.
        edition_date=(edition.scheduled_for or edition.cut_at or utcnow()).astimezone(ZoneInfo(newsletter.timezone)),
        # The inbox's preview line: the editor's intro when there is one, else the first story's lead.
        preheader=notes.words(edition.intro) or next((a.lead for a in articles if a.lead), ""),
        web_url=web_url(settings, newsletter, edition),
        archive_url=f"{settings.base_url}/n/{newsletter.slug}",
        subscribe_url=f"{settings.base_url}/",
        unsubscribe_url=UNSUBSCRIBE_URL,
        preferences_url=PREFERENCES_URL,
        postal_address=newsletter.postal_address or settings.postal_address,  # its own, else the default
        more=more,  # a reader's own story set (delivery.choices) left out this many: "N more on the web"
    )


class _Offline(Premailer):
    """premailer that loads no stylesheet from anywhere. allow_network=False keeps it off <link> tags, but
    not cssutils, which follows every @import (network, file:// and paths next to the working directory,
    with no timeout) through its own default fetcher: each sheet is parsed here with a fetcher that
    refuses and writes down what was asked for, so the render can say what it left out."""

    def __init__(self, html: str):
        super().__init__(html, allow_network=False, allow_loading_external_files=False, remove_classes=False,
                         cache_css_parsing=False, cssutils_logging_level="CRITICAL")
        self.refused: list[str] = []

    def _refuse(self, url: str) -> None:
        self.refused.append(url)  # None to cssutils means "could not be read": it drops the @import, parses on

    def _parse_css_string(self, css_body, validate=True):
        return cssutils.CSSParser(fetcher=self._refuse, validate=validate).parseString(css_body)


def inline_css(html: str) -> tuple[str, list[str]]:
    """The HTML with its own <style> rules inlined, and the stylesheets it named that were not loaded
    (neither a <link> nor an @import is ever read: a render touches no network and no file)."""
    inliner = _Offline(html)
    inlined = inliner.transform()
    links = lxml_html.fromstring(html).xpath(
        "//link[contains(concat(' ', normalize-space(@rel), ' '), ' stylesheet ')]/@href")
    return inlined, [*links, *inliner.refused]


def render_edition(newsletter: Newsletter, edition: Edition, articles: list[Article],
                   settings: Settings, blurbs: dict[int, str] | None = None) -> tuple[str, str, str]:
    """Subject, inlined HTML and text; the recipient's own links are placeholders filled per recipient."""
    subject, html, text, _ = render_with_notes(newsletter, edition, articles, settings, blurbs=blurbs)
    return subject, html, text


def render_with_notes(newsletter: Newsletter, edition: Edition, articles: list[Article],
                      settings: Settings, shown: list | None = None,
                      blurbs: dict[int, str] | None = None, more: int = 0) -> tuple[str, str, str, list[str]]:
    """render_edition, and what the editor should hear about it (stylesheets left out). `shown`: the stories
    as the body shows them, when their links differ from their own (clicks.counted); `blurbs`: an editor's
    words per story, by article id; `more`: stories of the reader's set left out for length (a variant)."""
    subject = edition.custom_subject or render_subject(newsletter, edition, articles)
    context = render_context(newsletter, edition, shown or articles, settings, subject, blurbs, more)
    # In the newsletter's language, once: every reader's copy is this render with their own links put in.
    html, not_loaded = inline_css(render(f"email/{newsletter.template}/body.html", language=newsletter.language,
                                         **context))
    text = render(f"email/{newsletter.template}/body.txt", language=newsletter.language, **context)
    notes = [f"the template's stylesheet {url} was not loaded: an edition is rendered without reading "
             f"anything from the network or from files; put its rules in a <style> in email/"
             f"{newsletter.template}/body.html" for url in dict.fromkeys(not_loaded)]
    return subject, html, text, notes


def public_html(edition: Edition, settings: Settings) -> str:
    """The web view: what subscribers got, without anyone's personal links (the template marks them)."""
    return public_of(edition.html, settings)


def public_of(html: str, settings: Settings) -> str:
    """An edition's rendered HTML made public: the personal lines out, the public ones in."""
    html = PERSONAL.sub("", html).replace("<!--public-->", "").replace("<!--/public-->", "")
    return html.replace(UNSUBSCRIBE_URL, f"{settings.base_url}/").replace(PREFERENCES_URL, f"{settings.base_url}/")


def render_html(newsletter: Newsletter, edition: Edition, articles: list[Article], settings: Settings,
                subject: str, blurbs: dict[int, str] | None = None) -> str:
    """The edition's HTML (inlined) for `articles` under `subject`, as render_edition makes it."""
    context = render_context(newsletter, edition, articles, settings, subject, blurbs)
    return inline_css(render(f"email/{newsletter.template}/body.html", language=newsletter.language,
                             **context))[0]


def mail_html(html: str) -> str:
    """The edition's HTML as mailed: without the lines meant for the public web view."""
    return PUBLIC_ONLY.sub("", html)


def write_preview(settings: Settings, edition: Edition, folder: Path | None = None) -> tuple[Path, Path]:
    """The HTML and text parts as a recipient will see them, as files (the personal links point to the
    archive instead of anyone's unsubscribe page). Returns their paths."""
    folder = folder or settings.outbox / "editions"
    private_files.make_dir(folder)
    newsletter = edition.newsletter
    archive = f"{settings.base_url}/n/{newsletter.slug}"
    stem = f"{newsletter.slug}-{edition.number}"
    paths = folder / f"{stem}.html", folder / f"{stem}.txt"
    for path, body in zip(paths, (mail_html(edition.html), edition.text), strict=True):
        body = body.replace(UNSUBSCRIBE_URL, archive).replace(PREFERENCES_URL, archive)
        tmp = path.with_suffix(".tmp")
        private_files.write(tmp, body.encode())
        tmp.replace(path)
    return paths
