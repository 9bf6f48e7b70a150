"""The Jinja2 environments: HTML autoescaped, text not; editors' snippets sandboxed."""

from __future__ import annotations

from contextvars import ContextVar
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from syndicate import links

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


def environment() -> Environment:
    return _environment(_override)


@cache
def _environment(override: Path | None) -> Environment:
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
    )
    # Every link that came from outside (a story's, its picture's, a network's) goes through `href` where it
    # becomes an attribute: a web address, or "" and no anchor.
    env.filters["href"] = links.href
    env.filters["plural"] = plural
    env.globals["csp_nonce"] = csp_nonce.get
    return env


def plural(count: int, one: str, many: str) -> str:
    """`{{ rest|plural('story', 'stories') }}`: "1 story", "2 stories", "0 stories"."""
    return f"{count} {one if count == 1 else many}"


@cache
def sandbox() -> SandboxedEnvironment:
    """For templates editors type (subjects, teasers): no attribute tricks, no escaping."""
    env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
    env.filters["plural"] = plural
    return env


def render(template_name: str, /, **context) -> str:
    return environment().get_template(template_name).render(**context)


def exists(template_name: str) -> bool:
    try:
        environment().get_template(template_name)
    except TemplateNotFound:
        return False
    return True
