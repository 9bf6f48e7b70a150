"""The API answers every request as /openapi.json says it will: each refusal a documented status in the one
error shape, `{"error": "what is wrong and what to do"}`, never a server error. Each test here is a case the
fuzzer (test_api_fuzz.py) found, kept as a plain request."""

from __future__ import annotations

import pytest

from desk_client import add_editor, api_headers, desk_client, signed_in
from syndicate.web.app import create_app

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


@pytest.mark.parametrize("path", ["/api/v1/articles/{id}", "/api/v1/editions/{id}", "/api/v1/posts/{id}",
                                  "/api/v1/subscribers/{id}", "/api/v1/articles?feed={id}"])
def test_an_id_too_large_for_the_database_is_refused_as_bad_input_not_a_server_error(client, headers, path):
    for too_large in (145589929071302400765436362752, 2**31):  # past SQLite's integers; past PostgreSQL's
        answer = client.get(path.format(id=too_large), headers=headers)

        assert answer.status_code == 422, (too_large, answer.text)
        assert "less than or equal to 2147483647" in answer.text


def test_the_articles_page_refuses_a_feed_filter_that_is_no_feed_id(client, svc):
    add_editor(svc)
    signed_in(client)

    for feed in ("99999999999999999999", "²"):
        answer = client.get("/desk/articles", params={"feed": feed})

        assert answer.status_code == 400, (feed, answer.status_code)
        assert "is not a feed id" in answer.text


def test_a_newsletter_without_a_short_name_is_refused_saying_what_is_missing(client, headers):
    answer = client.post("/api/v1/newsletters", headers=headers,
                         json={"slug": " ", "name": "Daily", "from_address": "news@example.com"})

    assert answer.status_code == 422
    assert answer.json() == {"error": "The short name can't be left blank"}
    assert client.get("/api/v1/newsletters", headers=headers).json() == []
