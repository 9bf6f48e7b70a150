"""The API answers every request as /openapi.json says it will: each refusal a documented status in the one
error shape, `{"error": "what is wrong and what to do"}`, never a server error. Each test here is a case the
fuzzer (test_api_fuzz.py) found, kept as a plain request."""

from __future__ import annotations

import pytest

from desk_client import add_editor, api_headers, desk_client
from syndicate.web import create_app

TOKEN_ROUTES = ("/api/", "/metrics")


@pytest.fixture
def client(svc):
    with desk_client() as client:
        yield client


@pytest.fixture
def headers(svc):
    add_editor(svc)
    return api_headers(svc)


def test_the_spec_documents_that_every_route_taking_a_token_refuses_a_missing_one_and_one_out_of_scope(svc):
    spec = create_app().openapi()
    operations = {(method.upper(), path): op for path, methods in spec["paths"].items()
                  for method, op in methods.items() if path.startswith(TOKEN_ROUTES)}

    assert ("GET", "/metrics") in operations and ("POST", "/api/articles") in operations
    for (method, path), op in operations.items():
        for status in ("401", "403"):
            answer = op["responses"].get(status)
            assert answer and answer["content"]["application/json"]["schema"], (method, path, status)
    assert {"200", "201", "413"} <= set(operations["POST", "/api/articles"]["responses"])
    assert {"413", "429", "502"} <= set(operations["POST", "/api/events/bounces"]["responses"])


def test_a_path_the_api_has_not_is_answered_in_its_error_shape(client, headers):
    answer = client.get("/api/v1/subscribers/null,null", headers=headers)

    assert answer.status_code == 404
    assert answer.json() == {"error": "this API has no /api/v1/subscribers/null,null: /docs (and /openapi.json) "
                                      "list its routes"}


def test_a_body_that_is_not_utf8_json_is_answered_400_in_the_error_shape(client, headers):
    answer = client.post("/api/v1/feeds", content=b"N.\xff\x0e\xfe",
                         headers=headers | {"Content-Type": "application/json"})

    assert answer.status_code == 400
    assert "error" in answer.json()
