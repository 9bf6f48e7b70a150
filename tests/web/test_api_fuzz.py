"""What the API promises, fuzzed: every operation in /openapi.json of the app served on a real port, called
with inputs generated from the spec itself (schemathesis), each with a good token of the scope it asks for.
No answer may be a server error, and every answer must be one the spec documents, in the shape it documents.

The run is bounded (FUZZ_EXAMPLES per operation, derandomized: the same inputs every run). Each operation
is its own test, on its own throwaway SQLite database seeded with a small newsroom (so ids the fuzzer tries
sometimes name real rows): what one operation does (stories pushed, readers suppressed, newsletters made)
never reaches another's run.
"""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import FIGURES
from syndicate.db import transaction
from syndicate.desk import editors
from syndicate.http import api_tokens
from syndicate.ingest import push
from syndicate.models import Feed
from syndicate.newsletters import lists
from syndicate.subscribers import consent
from syndicate.web.app import create_app

FUZZ_EXAMPLES = 25  # per operation: about 40 operations in well under a minute on two cores
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]

# The scope each route asks for (api_tokens.SCOPES), by the start of its path.
SCOPE_BY_PATH = {"/api/articles": "articles:push", "/api/events/bounces": "events:bounces",
                 "/metrics": "metrics:read", "/api/v1/": "desk:api", "/api/editions/": "stats:read"}


def scope_for(path: str) -> str | None:
    return next((scope for prefix, scope in SCOPE_BY_PATH.items() if path.startswith(prefix)), None)


@pytest.fixture
def newsroom(svc, closed_port):
    """A newsletter, a feed, stories and readers to find; links point at a port nobody listens on, so a
    link check or a poll the fuzzer starts fails at once, offline."""
    down = f"http://127.0.0.1:{closed_port}"
    with transaction(svc.Session) as session:
        daily = lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com")
        session.add(Feed(url=f"{down}/feed.xml"))
        for n in range(3):
            push.receive(session, push.PushedStory(url=f"{down}/story-{n}", title=f"Story {n}",
                                                   content_html=f"<p>Story {n}.</p>"))
        for n in range(3):
            consent.subscribe(session, f"reader{n}@example.com", [daily.id], confirmed=True)


@pytest.fixture
def scoped_tokens(svc, newsroom) -> dict[str, str]:
    """A good token of each scope: an editor's own for desk:api, one made for its job for every other."""
    with transaction(svc.Session) as session:
        ada = editors.add(session, "ada", "correct horse battery")
        made = {scope: api_tokens.create_token(session, scope, scopes=[scope])[1]
                for scope in api_tokens.SCOPES if scope != api_tokens.EDITOR_SCOPE}
        made[api_tokens.EDITOR_SCOPE] = api_tokens.create_token(session, "ada:fuzz", editor=ada)[1]
    return made


# The spec the app serves at /openapi.json, made without serving it: the cases are generated before any
# test's app runs (test_the_spec_fuzzed_is_the_one_the_app_serves keeps the two the same).
SPEC = create_app().openapi()
schema = schemathesis.openapi.from_dict(SPEC)


def test_the_spec_fuzzed_is_the_one_the_app_serves(served):
    assert httpx.get(f"{served}/openapi.json").json() == SPEC


@pytest.fixture(scope="module")
def fuzz_figures():
    """Counted across the run's operations, printed at its end."""
    figures = {"operations": set(), "statuses": Counter(), "started": time.monotonic()}
    yield figures
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(figures["statuses"].items()))
    FIGURES.append(f"API fuzz: {len(figures['operations'])} operations, {figures['statuses'].total()} requests "
                   f"({statuses}), {time.monotonic() - figures['started']:.1f} s")


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_spec_says_with_a_token_of_its_scope(case, served, scoped_tokens,
                                                                            fuzz_figures):
    scope = scope_for(case.path)
    headers = {"Authorization": f"Bearer {scoped_tokens[scope]}"} if scope else {}
    fuzz_figures["operations"].add(case.operation.label)
    response = case.call_and_validate(base_url=served, headers=headers, checks=CHECKS, timeout=30)
    fuzz_figures["statuses"][response.status_code] += 1
