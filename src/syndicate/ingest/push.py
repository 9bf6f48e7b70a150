"""push → article: a story a CMS sends the moment it is published, stored like a polled one.

A pushed story goes through the same normalisation as a feed item (sanitised HTML,
a clean lead, the title as the site wrote it, the canonical URL, the same identity and content
hash) and through `feeds.store`, so pushing it twice, pushing an edit, or polling it
later from the site's feed all end in one article.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.orm import Session

from syndicate import links
from syndicate.errors import InvalidInput
from syndicate.ingest import content, documents, feeds, language
from syndicate.models import utcnow
from syndicate.text import clean

MAX_BYTES = 1_000_000  # a story's HTML is rarely a tenth of this; more is an embedded file


class PushedStory(BaseModel):
    """The JSON body of `POST /api/articles`."""

    # An unknown field is most likely a misspelt one ("content" for "content_html"): say so, don't drop it.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    url: str = Field(description="The story's public address (http or https).")
    title: str = Field(description="The headline, plain text.")
    guid: str | None = Field(None, description="The CMS's id for the story; the same as the feed's <guid>.")
    content_html: str = Field("", description="The story's HTML; sanitised before it is stored.")
    summary: str = Field("", description="An excerpt, used for the lead when there is no content.")
    author: str | None = Field(None, max_length=300)
    categories: list[str] = Field(default_factory=list)
    image_url: str | None = Field(None, description="The lead image (http or https).")
    image_alt: str | None = Field(None, max_length=5000, description=(
        "What the lead image shows, for readers who can't see it (its alt text); used when the story's HTML "
        "gives that image no alt or caption. Posts carry it, cut to 1,000 characters."))
    published_at: datetime | None = Field(None, description="ISO 8601 with a time zone; default: now.")
    language: str | None = Field(None, max_length=35, description="The story's language as a BCP 47 tag (\"de\", "
                                 "\"pt-BR\"); default: read off its words.")

    @field_validator("url")
    @classmethod
    def _web_address(cls, value: str) -> str:
        return _checked_url(value)

    @field_validator("image_url")
    @classmethod
    def _image_address(cls, value: str | None) -> str | None:
        return _checked_url(value) if value else None

    @field_validator("title")
    @classmethod
    def _headline(cls, value: str) -> str:
        if not clean(content.plain_text(value)):
            raise ValueError("the title is empty; send the story's headline")
        return value

    @field_validator("guid", "author", "image_alt")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("categories")
    @classmethod
    def _no_blank_categories(cls, value: list[str]) -> list[str]:
        return [clean(c) for c in value if clean(c)]

    @field_validator("language")
    @classmethod
    def _language_tag(cls, value: str | None) -> str | None:
        if value and language.declared(value) is None:
            raise ValueError(f"{value!r} is not a language tag; write one like \"en\", \"de\" or \"pt-BR\"")
        return value or None

    @field_validator("published_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("the time has no time zone; add one, e.g. 2026-05-01T07:00:00+02:00 or "
                             "2026-05-01T05:00:00Z")
        return value.astimezone(UTC) if value else None


def _checked_url(value: str) -> str:
    if len(value) > 2048:
        raise ValueError("the address is longer than 2048 characters")
    try:
        return links.web_link(value)
    except InvalidInput as e:
        raise ValueError(str(e)) from e


def parse(body: bytes) -> PushedStory:
    """The story in a request body; InvalidInput says which field to fix and how."""
    try:
        return PushedStory.model_validate_json(body)
    except ValidationError as e:
        raise InvalidInput(_explain(e)) from e


def _explain(error: ValidationError) -> str:
    problems = []
    for problem in error.errors(include_url=False):
        kind, where = problem["type"], ".".join(str(part) for part in problem["loc"])
        if kind == "json_invalid":
            return (f"the body is not valid JSON ({problem['ctx'].get('error', problem['msg'])}); "
                    'send an object such as {"url": "https://…", "title": "…"}')
        if kind == "model_type" or not where:
            return 'the body must be a JSON object such as {"url": "https://…", "title": "…"}'
        if kind == "missing":
            message = "is required"
        elif kind == "extra_forbidden":
            message = f"is not a field of a story; the fields are {', '.join(PushedStory.model_fields)}"
        else:
            message = problem["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def entry_from_push(story: PushedStory) -> documents.Entry:
    """A pushed story, normalised exactly as a feed item is (`documents.normalise`)."""
    return documents.normalise(
        link=story.url, guid=story.guid, title=story.title, html=story.content_html or "",
        summary=story.summary or "", published_at=story.published_at, author=story.author,
        image_url=story.image_url, categories=story.categories, image_alt=story.image_alt,
        declared_language=language.declared(story.language),
    )


class Pushed(BaseModel):
    """The answer to a push, as /openapi.json documents it."""

    id: int = Field(description="The article's id.")
    status: Literal["created", "updated", "unchanged"]


@dataclass
class Received:
    article_id: int
    status: str  # created | updated | unchanged


def receive(session: Session, story: PushedStory, now: datetime | None = None) -> Received:
    """Store a pushed story: a new article, an edit of a known one, or nothing new."""
    now = now or utcnow()
    entry = entry_from_push(story)
    new_ids, updated = feeds.store(session, None, [entry], now)  # no feed: pushed
    if new_ids:
        return Received(new_ids[0], "created")
    return Received(_stored_as(session, entry), "updated" if updated else "unchanged")


def _stored_as(session: Session, entry: documents.Entry) -> int:
    article = feeds.find(session, None, entry)
    if article is None:  # store() neither found nor inserted it: a bug, not bad input
        raise RuntimeError(f"a pushed story ({entry.identity!r}) was neither stored nor found")
    return article.id
