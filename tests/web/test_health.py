"""/healthz and its checks against real services: Redis, an SMTP server (aiosmtpd), ports nobody listens on,
a mail server that greets with 421 and one that never greets. Every check answers within its deadline and
never repeats a password."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from sqlalchemy import create_engine, func, select
from starlette.testclient import TestClient

from conftest import configured
from syndicate.config import parse_smtp_url
from syndicate.db import transaction
from syndicate.http import api_tokens
from syndicate.ledger import Leases
from syndicate.tasks import configure
from syndicate.web import health
from syndicate.web.app import create_app

SECRET = "hunter2-not-for-tickets"


@pytest.fixture
def silent_server():
    """A port that accepts connections and then says nothing: a mail server hung before its greeting."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def busy_server():
    """A mail server that greets everyone with 421: up, but refusing work."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.sendall(b"421 4.3.2 Too busy, try later\r\n")
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    listener.close()


# ── each check ───────────────────────────────────────────────────────────────


def test_the_database_check_runs_select_1(svc):
    check = health.timed(lambda: health.database(svc.engine))
    assert check.ok and check.detail == "sqlite: SELECT 1 answered" and check.ms >= 0


def test_a_database_that_is_down_is_reported_without_its_password(closed_port):
    engine = create_engine(f"postgresql+psycopg://syndicate:{SECRET}@127.0.0.1:{closed_port}/news")
    check = health.timed(lambda: health.database(engine), secrets=(SECRET,))
    assert not check.ok and "OperationalError" in check.detail and str(closed_port) in check.detail
    assert SECRET not in check.detail and "\n" not in check.detail
    engine.dispose()


def test_redis_answers_ping(redis_url):
    check = health.timed(lambda: health.broker(redis_url))
    assert check.ok and check.detail.startswith("redis at 127.0.0.1:") and "answered PING" in check.detail


def test_a_redis_that_is_down_is_reported_without_its_password(closed_port):
    url = f"redis://:{SECRET}@127.0.0.1:{closed_port}/0"
    check = health.timed(lambda: health.broker(url, timeout=1), secrets=(SECRET,))
    assert not check.ok and "ConnectionError" in check.detail and SECRET not in check.detail


def test_an_amqp_broker_that_is_down_is_reported_at_once_without_retrying(closed_port):
    started = time.monotonic()
    check = health.timed(lambda: health.broker(f"amqp://guest:guest@127.0.0.1:{closed_port}//", timeout=1))
    assert not check.ok and "Connection refused" in check.detail
    assert time.monotonic() - started < 2  # kombu's own retries would pause 2 s and more between tries


def test_the_embedded_broker_is_covered_by_the_database_check(tmp_path):
    check = health.timed(lambda: health.broker(f"sqla+sqlite:///{tmp_path / 'broker.db'}"))
    assert check.ok and check.detail == "embedded (sqla+sqlite): covered by the database check"


def test_a_mail_server_that_greets_and_answers_ehlo_is_up(smtp_server):
    check = health.timed(lambda: health.smtp(parse_smtp_url(smtp_server.url)))
    assert check.ok and check.detail.endswith("greeted us and answered EHLO")
    assert smtp_server.messages == []  # nothing sent: a greeting, EHLO and QUIT


def test_without_smtp_the_outbox_is_reported():
    check = health.timed(lambda: health.smtp(None))
    assert check.ok and check.detail == "outbox (no SMTP configured)"


def test_a_mail_server_that_is_down_refusing_or_silent_is_reported(closed_port, busy_server, silent_server):
    down = health.timed(lambda: health.smtp(parse_smtp_url(f"smtp://127.0.0.1:{closed_port}")))
    assert not down.ok and "Connection refused" in down.detail
    busy = health.timed(lambda: health.smtp(parse_smtp_url(f"smtp://127.0.0.1:{busy_server}")))
    assert not busy.ok and busy.detail == f"Unhealthy: 127.0.0.1:{busy_server} greeted us with 421 4.3.2 Too " \
                                          "busy, try later"
    silent = health.timed(lambda: health.smtp(parse_smtp_url(f"smtp://127.0.0.1:{silent_server}"), timeout=0.5))
    assert not silent.ok and "timed out" in silent.detail


def test_a_login_to_the_mail_server_is_never_tried_so_its_password_is_never_sent(smtp_server):
    settings = parse_smtp_url(smtp_server.url.replace("smtp://", f"smtp://news:{SECRET}@"))
    check = health.timed(lambda: health.smtp(settings))
    assert check.ok  # aiosmtpd here offers no AUTH: a login attempt would have failed the check


# ── all at once ──────────────────────────────────────────────────────────────


def test_checks_run_side_by_side_and_one_stuck_past_the_deadline_counts_as_down():
    release = threading.Event()
    started = time.monotonic()
    results = health.run({"stuck": lambda: release.wait(30) and "late", "quick": lambda: "fine"}, deadline=0.3)
    release.set()
    assert time.monotonic() - started < 5
    assert results["quick"].ok and results["quick"].detail == "fine"
    assert not results["stuck"].ok and results["stuck"].detail == "no answer within 0.3 s"


def test_a_failing_check_becomes_an_error_with_its_reason_and_the_secret_hidden():
    def boom() -> str:
        raise OSError(f"could not log in with {SECRET}")

    [(name, check)] = health.run({"smtp": boom}, secrets=(SECRET,)).items()
    assert check.as_json() == {"status": "error", "detail": "OSError: could not log in with ***",
                               "ms": pytest.approx(check.ms, abs=0.1)}


# ── /healthz ─────────────────────────────────────────────────────────────────


def bearer(svc) -> dict[str, str]:
    """The header of a fresh metrics:read token: what an operator's monitoring sends for the details."""
    with transaction(svc.Session) as session:
        _, token = api_tokens.create_token(session, "monitoring", scopes=["metrics:read"])
    return {"Authorization": f"Bearer {token}"}


def test_healthz_answers_200_with_every_check_when_all_are_up(make_settings, tmp_path, smtp_server, redis_url):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'h.db'}", smtp_url=smtp_server.url,
                                   broker_url=redis_url))
    response = TestClient(create_app()).get("/healthz", headers=bearer(svc))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and set(body["checks"]) == {"database", "broker", "smtp"}
    assert {check["status"] for check in body["checks"].values()} == {"ok"}
    assert "answered PING" in body["checks"]["broker"]["detail"] and "failing" not in body


def test_healthz_answers_200_on_one_machine_with_nothing_installed(svc):
    body = TestClient(create_app()).get("/healthz", headers=bearer(svc)).json()
    assert body["checks"]["smtp"]["detail"] == "outbox (no SMTP configured)"
    assert body["checks"]["broker"]["detail"].startswith("embedded (sqla+sqlite)")
    assert body["status"] == "ok"


def test_healthz_answers_503_naming_what_is_down_within_seconds_and_without_passwords(make_settings, closed_port,
                                                                                      caplog):
    configure(make_settings(database_url=f"postgresql://syndicate:{SECRET}@127.0.0.1:{closed_port}/news",
                            broker_url=f"redis://:{SECRET}@127.0.0.1:{closed_port}/0",
                            smtp_url=f"smtp+starttls://news:{SECRET}@127.0.0.1:{closed_port}"))
    started = time.monotonic()
    # With the database down no token can be checked: even a token's holder gets the public answer.
    with caplog.at_level("WARNING", logger="syndicate.web.health"):
        response = TestClient(create_app()).get("/healthz", headers={"Authorization": "Bearer syn_anything"})
    assert time.monotonic() - started < health.DEADLINE + 1
    assert response.status_code == 503 and SECRET not in response.text
    body = response.json()
    assert body["status"] == "error" and body["failing"] == ["database", "broker", "smtp"]
    assert all(body["checks"][name] == "error" for name in body["failing"])
    assert all(f"health check {name} failed" in caplog.text for name in body["failing"])
    assert SECRET not in caplog.text


def test_a_second_probe_within_seconds_gets_the_same_answer_without_asking_the_services_again(svc, monkeypatch):
    calls = []
    real = health.report
    monkeypatch.setattr(health, "report", lambda *a, **k: calls.append(1) or real(*a, **k))
    cached = health.Cached(max_age=60)
    first, again = cached(svc.settings, svc.engine), cached(svc.settings, svc.engine)
    assert first == again and len(calls) == 1
    cached.at -= 61  # a minute later it asks again
    cached(svc.settings, svc.engine)
    assert len(calls) == 2


def test_the_public_healthz_says_ok_or_not_per_part_and_nothing_of_our_hosts(make_settings, tmp_path, closed_port,
                                                                             caplog):
    configured(make_settings(database_url=f"sqlite:///{tmp_path / 'h.db'}",
                             broker_url=f"redis://127.0.0.1:{closed_port}/0",
                             smtp_url=f"smtp+starttls://127.0.0.1:{closed_port}"))
    with caplog.at_level("WARNING", logger="syndicate.web.health"):
        response = TestClient(create_app()).get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "error", "checks": {"database": "ok", "broker": "error", "smtp": "error"},
                               "failing": ["broker", "smtp"]}
    assert str(closed_port) not in response.text
    assert "127.0.0.1" not in response.text and "sqlite" not in response.text
    # What went wrong, and where, is for the operator: in the log.
    assert f"127.0.0.1:{closed_port}" in caplog.text


def test_healthz_gives_what_each_check_saw_only_for_a_metrics_token(svc):
    client = TestClient(create_app())

    detailed = client.get("/healthz", headers=bearer(svc)).json()
    refused = client.get("/healthz", headers={"Authorization": "Bearer syn_guessed"})

    assert detailed["checks"]["database"] == {"status": "ok", "detail": "sqlite: SELECT 1 answered",
                                              "ms": detailed["checks"]["database"]["ms"]}
    assert refused.status_code == 401 and "detail" not in refused.text
    assert refused.headers["www-authenticate"].startswith("Bearer")
    with transaction(svc.Session) as session:
        _, push_only = api_tokens.create_token(session, "cms", scopes=["articles:push"])
    other_scope = client.get("/healthz", headers={"Authorization": f"Bearer {push_only}"})
    assert other_scope.status_code == 403 and "metrics:read" in other_scope.text and "sqlite" not in other_scope.text


def test_a_lane_with_work_due_and_nothing_done_for_a_while_makes_healthz_degraded_naming_it(svc, sample_feed,
                                                                                            monkeypatch):
    """An edition cut with no worker on the mail queue (or one failing on every try): the services all answer,
    so 200, but "degraded", naming the lane; why, with a metrics token. A claim by a worker clears it."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from syndicate.delivery import sending
    from syndicate.ingest import feeds
    from syndicate.models import Delivery
    from syndicate.newsletters import lists
    from syndicate.subscribers import consent

    with transaction(svc.Session) as session:
        newsletter = lists.add_newsletter(session, max_age_hours=0,
                                          slug="daily", name="Daily", from_address="news@example.com")
        for i in range(3):
            consent.subscribe(session, f"reader{i}@example.org", [newsletter.id], confirmed=True)
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        sending.cut(session, newsletter, svc.settings)  # queued nowhere: no worker will take it
    monkeypatch.setattr(health.Cached.__init__, "__defaults__", (0.0,))  # every probe looks again
    monitoring = bearer(svc)
    client = TestClient(create_app())
    assert client.get("/healthz").json()["status"] == "ok"  # just cut: nothing is late yet

    long_ago = datetime.now(UTC) - Leases().stuck - timedelta(minutes=1)
    with transaction(svc.Session) as session:
        session.execute(update(Delivery).values(next_attempt_at=long_ago))
    public = client.get("/healthz")
    detailed = client.get("/healthz", headers=monitoring).json()
    assert public.status_code == 200
    assert public.json()["status"] == "degraded" and public.json()["lanes"]["mail"] == "stuck"
    assert public.json()["stuck"] == [{"lane": "mail"}]  # the public learns which lane, not our counts
    assert detailed["stuck"][0]["lane"] == "mail"
    assert "3 deliveries due" in detailed["stuck"][0]["reason"]
    assert "worker consuming the mail queue" in detailed["stuck"][0]["reason"]
    metrics = client.get("/metrics", headers=monitoring).text  # for an alert rule
    assert 'syndicate_lane_stuck{lane="mail"} 1' in metrics and 'syndicate_lane_stuck{lane="social"} 0' in metrics

    with transaction(svc.Session) as session:  # a worker takes one: the lane moves
        session.execute(update(Delivery).where(Delivery.id == session.scalar(select(func.min(Delivery.id))))
                        .values(status="sending", claimed_by="w", claimed_at=datetime.now(UTC)))
    assert client.get("/healthz").json()["status"] == "ok"
    assert 'syndicate_lane_stuck{lane="mail"} 0' in client.get("/metrics", headers=monitoring).text
