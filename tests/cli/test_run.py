"""`syndicate run`: worker, beat and web app as real processes on one machine, no Redis, no PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import create_engine, text

from conftest import answers, free_port, hidden_fields, terminate, wait_for


@pytest.fixture
def running(tmp_path, smtp_server):
    port = free_port()
    env = dict(os.environ, SYNDICATE_DATA_DIR=str(tmp_path / "data"), SYNDICATE_SMTP_URL=smtp_server.url,
               SYNDICATE_BASE_URL=f"http://127.0.0.1:{port}", SYNDICATE_WEB_PORT=str(port),
               SYNDICATE_TICK_INTERVAL="1", SYNDICATE_ALLOW_PRIVATE_FEEDS="1", SYNDICATE_SECRET_KEY="run-test")
    for name in ("SYNDICATE_DATABASE_URL", "SYNDICATE_BROKER_URL"):
        env.pop(name, None)  # the embedded defaults
    log = open(tmp_path / "run.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "syndicate", "run", "--concurrency", "1"], env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(base + "/healthz") or process.poll() is not None, 60, "the web app")
        assert process.poll() is None, (tmp_path / "run.log").read_text()
        yield process, base, env
    finally:
        if process.poll() is None:
            terminate(process, 40)
        log.close()


def syndicate(env, *args) -> str:
    done = subprocess.run([sys.executable, "-m", "syndicate", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_syndicate_run_serves_the_whole_pipeline_on_one_machine(running, smtp_server, feed_server, sample_feed,
                                                                tmp_path):
    process, base, env = running
    syndicate(env, "newsletter", "add", "daily", "--name", "The Daily", "--from-address", "daily@news.example",
              "--max-age", "0")  # the sample's stories are from 2023
    # Teasers in dry run, at any hour, no gap or age limit (the sample's stories are years old).
    syndicate(env, "account", "add", "x-desk", "--network", "x", "--dry-run", "--window", "always", "--min-gap", "0",
              "--max-age", "0")

    # A reader signs up on the web; the worker mails the confirmation; the reader confirms by POST.
    form = hidden_fields(httpx.get(base + "/").text)  # the form's token, as a browser sends it back
    response = httpx.post(base + "/subscribe", data={**form, "email": "reader@example.org", "newsletter": "daily"})
    assert response.status_code == 200 and "Check your inbox" in response.text
    wait_for(lambda: smtp_server.messages, 30, "the confirmation mail")
    confirmation = email.message_from_bytes(smtp_server.messages[0].data, policy=email.policy.default)
    link = re.search(r"http://\S+/confirm/\S+", confirmation.get_body(("plain",)).get_content()).group(0)
    page = httpx.get(link)
    assert page.status_code == 200  # a scanner's GET changes nothing
    assert httpx.post(link, data=hidden_fields(page.text)).status_code == 200

    # A feed is added; beat's tick polls it; the edition is due now; the worker delivers it.
    syndicate(env, "feed", "add", feed_server.serve("/feed/", sample_feed))
    wait_for(lambda: "Armenia" in syndicate(env, "article", "list"), 30, "the articles")
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'syndicate.db'}")
    with engine.begin() as connection:
        connection.execute(text("UPDATE newsletters SET next_run_at = :t"),
                           {"t": (datetime.now(UTC) - timedelta(seconds=1)).replace(tzinfo=None)})
    engine.dispose()
    wait_for(lambda: len(smtp_server.messages) == 2, 30, "the edition")
    edition = email.message_from_bytes(smtp_server.messages[1].data, policy=email.policy.default)
    assert edition["To"] == "reader@example.org"
    assert edition["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert httpx.get(base + "/n/daily/1").status_code == 200

    # Teasers were made in dry-run (no X credentials), one per story.
    wait_for(lambda: len(list((tmp_path / "data" / "outbox" / "posts").glob("*.json"))) == 4, 30, "the posts")

    # SIGTERM stops the web app, the worker and beat.
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=40) == 0
    leftovers = subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert leftovers == []


def start_run(tmp_path, env_overrides: dict[str, str], *args: str):
    """`syndicate run ARGS` on the embedded defaults with no SYNDICATE_BASE_URL unless given; (process, log)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SYNDICATE_")}
    env.update(SYNDICATE_DATA_DIR=str(tmp_path / "data"), SYNDICATE_SECRET_KEY="run-test",
               SYNDICATE_TICK_INTERVAL="1", **env_overrides)
    log_path = tmp_path / "run.log"
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, "-m", "syndicate", "run", "--concurrency", "1", *args], env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return process, log_path, env


def test_run_on_another_port_mails_links_to_that_port_and_says_so(tmp_path, smtp_server):
    port = free_port()
    process, log, env = start_run(tmp_path, {"SYNDICATE_SMTP_URL": smtp_server.url}, "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(base + "/healthz") or process.poll() is not None, 60, "the web app")
        assert process.poll() is None, log.read_text()
        said = log.read_text()
        assert f"links:  mails will carry links to {base}/ (where the web app listens" in said, said
        syndicate(env, "newsletter", "add", "daily", "--name", "The Daily", "--from-address", "daily@news.example")

        # The sign-up form checks the browser's Origin against the base URL: on the old default it refused.
        form = hidden_fields(httpx.get(base + "/").text)
        response = httpx.post(base + "/subscribe", headers={"Origin": base},
                              data={**form, "email": "reader@example.org", "newsletter": "daily"})
        assert response.status_code == 200 and "Check your inbox" in response.text
        wait_for(lambda: smtp_server.messages, 30, "the confirmation mail")
        confirmation = email.message_from_bytes(smtp_server.messages[0].data, policy=email.policy.default)
        link = re.search(r"http://\S+/confirm/\S+", confirmation.get_body(("plain",)).get_content()).group(0)
        assert link.startswith(f"{base}/confirm/")
        assert httpx.get(link).status_code == 200  # and the link reaches this very app
    finally:
        terminate(process, 40)


def test_run_names_both_addresses_when_the_base_url_is_not_where_it_serves(tmp_path):
    port = free_port()
    process, log, _ = start_run(tmp_path, {"SYNDICATE_BASE_URL": "https://news.example.org/"},
                                "--host", "0.0.0.0", "--port", str(port))
    try:
        wait_for(lambda: "links:" in log.read_text() or process.poll() is not None, 60, "the start-up lines")
        said = log.read_text()
        assert (f"links:  mails will carry links to https://news.example.org/ (SYNDICATE_BASE_URL); "
                f"serving on http://0.0.0.0:{port}/") in said, said
        assert "the two differ" in said
    finally:
        terminate(process, 40)


def test_run_on_every_address_without_a_base_url_says_links_name_this_machine(tmp_path):
    port = free_port()
    process, log, _ = start_run(tmp_path, {}, "--host", "0.0.0.0", "--port", str(port))
    try:
        wait_for(lambda: "links:" in log.read_text() or process.poll() is not None, 60, "the start-up lines")
        said = log.read_text()
        assert f"mails will carry links to http://127.0.0.1:{port}/" in said, said
        assert "0.0.0.0 is every address" in said and "set SYNDICATE_BASE_URL" in said
    finally:
        terminate(process, 40)


@pytest.mark.parametrize("host", ["evil.example/@news.example.org", "news.example.org\nBcc: x", "a b"])
def test_run_refuses_a_host_that_would_make_another_address_in_links(tmp_path, host):
    env = {name: value for name, value in os.environ.items() if not name.startswith("SYNDICATE_")}
    env["SYNDICATE_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run([sys.executable, "-m", "syndicate", "run", "--host", host], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "is not a host name or IP address" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started or was made


def test_run_and_its_worker_warn_at_start_about_newsletters_without_a_postal_address(tmp_path):
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("SYNDICATE_")}
    env.update(SYNDICATE_DATA_DIR=str(tmp_path / "data"), SYNDICATE_SECRET_KEY="run-test")
    syndicate(env, "db", "upgrade")
    syndicate(env, "newsletter", "add", "daily", "--name", "The Daily", "--from-address", "daily@news.example")
    syndicate(env, "newsletter", "add", "weekly", "--name", "The Weekly", "--from-address", "daily@news.example",
              "--postal-address", "Example News\n1 Main St")
    process, log, _ = start_run(tmp_path, {}, "--port", str(port))
    try:
        def warnings() -> list[str]:
            return [line for line in log.read_text().splitlines() if "no postal address: daily would" in line]

        # `run` itself, and the worker in its log once it is ready (the two write to the log unordered)
        wait_for(lambda: len(warnings()) == 2 or process.poll() is not None, 60, "both warnings")
        assert process.poll() is None, log.read_text()
        warnings = warnings()
        assert all("weekly" not in line for line in warnings)
        assert "SYNDICATE_POSTAL_ADDRESS" in warnings[0] and "--postal-address" in warnings[0]
    finally:
        terminate(process, 40)


def test_web_alone_on_another_port_takes_sign_ups_from_its_own_pages(tmp_path):
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("SYNDICATE_")}
    env.update(SYNDICATE_DATA_DIR=str(tmp_path / "data"), SYNDICATE_SECRET_KEY="run-test")
    syndicate(env, "db", "upgrade")
    syndicate(env, "newsletter", "add", "daily", "--name", "The Daily", "--from-address", "daily@news.example",
              "--postal-address", "Example News")
    log_path = tmp_path / "web.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "syndicate", "web", "--port", str(port)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(base + "/healthz") or process.poll() is not None, 60, "the web app")
        assert f"mails will carry links to {base}/" in log_path.read_text()
        # The form's origin check compares with the base URL: on the old default (port 8000) it refused this.
        form = hidden_fields(httpx.get(base + "/").text)
        response = httpx.post(base + "/subscribe", headers={"Origin": base},
                              data={**form, "email": "reader@example.org", "newsletter": "daily"})
        assert response.status_code == 200 and "Check your inbox" in response.text, response.text
    finally:
        terminate(process, 20)
