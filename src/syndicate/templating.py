"""The Jinja2 environments: HTML autoescaped, text not; editors' snippets sandboxed. One environment per
language (cached): its `_`/`gettext`/`ngettext` and `{% trans %}` speak that language, so a render never
depends on what another thread rendered in."""

from __future__ import annotations

from contextvars import ContextVar
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, pass_context, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape

from syndicate import i18n, links

_override: Path | None = None  # SYNDICATE_TEMPLATE_DIR, set by services.use
# This response's Content-Security-Policy nonce (csp.SecurityHeaders sets it): our own <script> tags carry it.
csp_nonce: ContextVar[str] = ContextVar("csp_nonce", default="")


def use_template_dir(folder: Path | None) -> None:
    """Look up templates in `folder` first: editors override a file by giving it the same path."""
    global _override
    _override = folder


def template_dirs() -> list[Path]:
    # Installed wheel: templates/ is packaged inside syndicate/. Source checkout: the repo's templates/.
    here = Path(__file__).parent
    return [p for p in (here / "templates", here.parents[1] / "templates") if p.is_dir()]


def environment(language: str = i18n.SOURCE) -> Environment:
    """The templates in `language` (English when it has no catalogue)."""
    return _environment(_override, i18n.known(language))


@cache
def _environment(override: Path | None, language: str) -> Environment:
    dirs = template_dirs()
    if not dirs:
        raise RuntimeError("syndicate's templates/ folder is missing from this installation")
    env = Environment(
        loader=FileSystemLoader(([override] if override else []) + dirs),
        autoescape=select_autoescape(["html", "xml"], default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
    )
    # Every link that came from outside (a story's, its picture's, a network's) goes through `href` where it
    # becomes an attribute: a web address, or "" and no anchor.
    env.filters["href"] = links.href
    translations = i18n.translations(language)
    gettext, ngettext = _gettext(translations), _ngettext(translations)
    env.newstyle_gettext = True  # {% trans %} calls them with its variables, as _() does
    env.globals.update(_=gettext, gettext=gettext, ngettext=ngettext, language=language)
    env.filters["plural"] = lambda count, one, many: plural(count, one, many, translations.ngettext)
    env.filters["full_date"] = lambda value: i18n.full_date(value, language)
    env.filters["long_date"] = lambda value: i18n.long_date(value, language)
    env.globals["csp_nonce"] = csp_nonce.get
    return env


def _translated(context, text: str, variables: dict) -> str:
    # A translation is text, not markup: escaped in an HTML template (a translator's "<b>" shows as typed), then
    # the variables go in (escaped too, unless already safe). Always %-formatted, as jinja2's own newstyle
    # gettext does, so `_()` and `{% trans %}` agree: a literal % in a message is written %%.
    if context.eval_ctx.autoescape:
        text = escape(text)
    return text % variables


def _gettext(translations):
    @pass_context
    def gettext(context, message: str, /, **variables) -> str:
        return _translated(context, translations.gettext(message), variables)
    return gettext


def _ngettext(translations):
    @pass_context
    def ngettext(context, singular: str, plural: str, num: int, /, **variables) -> str:
        variables.setdefault("num", num)
        return _translated(context, translations.ngettext(singular, plural, num), variables)
    return ngettext


def plural(count: int, one: str, many: str, ngettext=None) -> str:
    """`{{ rest|plural('story', 'stories') }}`: "1 story", "2 stories", "0 stories"; in a template of another
    language, the words as its catalogue has them ("1 Artikel") and its own rule for which. Extraction doesn't
    see a filter's arguments: a template meant for translation uses ngettext, which it does see. Editors'
    subject templates (the sandbox) keep their own words: they are typed in the newsletter's language."""
    word = ngettext(one, many, count) if ngettext else (one if count == 1 else many)
    return f"{count} {word}"


@cache
def sandbox() -> SandboxedEnvironment:
    """For templates editors type (subjects, teasers): no attribute tricks, no escaping."""
    env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
    env.filters["plural"] = plural
    return env


def render(template_name: str, /, *, language: str = i18n.SOURCE, **context) -> str:
    return environment(language).get_template(template_name).render(**context)


def exists(template_name: str) -> bool:
    try:
        environment().get_template(template_name)
    except TemplateNotFound:
        return False
    return True
