"""Docker cannot run here, so these tests keep docker-compose.yml and the Dockerfile honest.

Every command they start must exist in the project (the `syndicate` CLI or the Celery app and
its queues), every SYNDICATE_* variable they set must be one the settings read, and the
services must be wired so that `docker compose up` can actually become healthy.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
CONFIG_MODULE = ROOT / "src" / "syndicate" / "config.py"

COMPOSE_TEXT = COMPOSE_FILE.read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict] = COMPOSE["services"]
DOCKERFILE_TEXT = DOCKERFILE.read_text()

REQUIRED_SERVICES = (
    "redis",
    "postgres",
    "mailpit",
    "migrate",
    "web",
    "worker-ingest",
    "worker-mail",
    "worker-social",
    "beat",
)
ONE_SHOT_OR_UNCHECKABLE = {"migrate", "beat"}  # no healthcheck expected
PROJECT_SERVICES = sorted(name for name, service in SERVICES.items() if "build" in service)


@pytest.fixture(autouse=True)
def _keep_data_out_of_the_checkout(tmp_path, monkeypatch):
    # Importing the Celery app reads the settings; the defaults would write under the cwd.
    monkeypatch.setenv("SYNDICATE_DATA_DIR", str(tmp_path / "data"))


# --- parsing helpers -------------------------------------------------------------------------


def _healthcheck_argv(service: dict) -> list[str] | None:
    test = service.get("healthcheck", {}).get("test")
    if isinstance(test, str):
        return shlex.split(test)
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        return shlex.split(test[1])
    if test[0] == "CMD":
        return list(test[1:])
    return list(test)


def _project_commands() -> list[pytest.param]:
    """(service, where, argv) for every command a project-built container runs."""
    params = []
    for name in PROJECT_SERVICES:
        service = SERVICES[name]
        if "command" in service:
            params.append(pytest.param(name, "command", service["command"], id=f"{name}:command"))
        argv = _healthcheck_argv(service)
        if argv and argv[0] in ("syndicate", "celery"):
            params.append(pytest.param(name, "healthcheck", argv, id=f"{name}:healthcheck"))
    return params


def _dockerfile_cmd() -> list[str]:
    lines = [line for line in DOCKERFILE_TEXT.splitlines() if re.match(r"\s*CMD\s", line)]
    assert lines, "the Dockerfile has no CMD"
    cmd = json.loads(lines[-1].split(None, 1)[1])  # the last CMD wins
    assert isinstance(cmd, list), "the Dockerfile CMD must be in exec form (a JSON list)"
    return cmd


def _option_names(words: list[str]) -> list[str]:
    return [word.split("=", 1)[0] for word in words if word.startswith("-") and word != "-"]


def _option_value(words: list[str], names: tuple[str, ...]) -> list[str]:
    values = []
    for i, word in enumerate(words):
        name, eq, value = word.partition("=")
        if name in names:
            values.append(value if eq else words[i + 1])
    return values


def _assert_syndicate_command_exists(argv: list[str]) -> None:
    from click.testing import CliRunner

    from syndicate.cli.main import main

    assert argv[0] == "syndicate"
    words = argv[1:]
    path = []
    for word in words:
        if word.startswith("-"):
            break
        path.append(word)
    # Option values (e.g. "0.0.0.0") come after the first option, so they are not in `path`.
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, (
        f"`syndicate {' '.join(path)} --help` failed (exit {result.exit_code}):\n{result.output}"
    )
    for option in _option_names(words):
        assert option in result.output, (
            f"`syndicate {' '.join(path)}` has no option {option}:\n{result.output}"
        )


def _assert_celery_command_exists(argv: list[str]) -> None:
    from celery import Celery
    from celery.bin.celery import celery as celery_cli

    assert argv[0] == "celery"
    global_params = {opt: param for param in celery_cli.params for opt in param.opts + param.secondary_opts}
    words = argv[1:]
    app_name, subcommand, i = None, None, 0
    while i < len(words):
        name, eq, value = words[i].partition("=")
        if not name.startswith("-"):
            subcommand = name
            break
        assert name in global_params, f"celery has no global option {name}"
        param = global_params[name]
        takes_value = not getattr(param, "is_flag", False) and not eq
        if name in ("-A", "--app"):
            app_name = value if eq else words[i + 1]
        i += 2 if takes_value else 1
    assert subcommand in celery_cli.commands, (
        f"`celery {subcommand}` is not a celery subcommand; have {sorted(celery_cli.commands)}"
    )
    rest = words[i + 1:]
    sub = celery_cli.commands[subcommand]
    sub_options = {opt for param in sub.params for opt in param.opts + param.secondary_opts}
    for option in _option_names(rest):
        assert option in sub_options, f"`celery {subcommand}` has no option {option}"

    assert app_name, f"{argv}: name the Celery app with -A"
    module = importlib.import_module(app_name)
    app = getattr(module, "app", None)
    assert isinstance(app, Celery), f"{app_name} has no Celery app named `app`"
    declared = {queue.name for queue in app.conf.task_queues or ()}
    for value in _option_value(rest, ("-Q", "--queues")):
        for queue in filter(None, value.split(",")):
            assert queue in declared, f"queue {queue!r} is not declared by {app_name}.app: {declared}"


# --- services and wiring ---------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED_SERVICES)
def test_service_is_defined(name):
    assert name in SERVICES, f"docker-compose.yml has no `{name}` service"


@pytest.mark.parametrize("name", sorted(set(SERVICES) - ONE_SHOT_OR_UNCHECKABLE))
def test_long_running_service_has_a_healthcheck(name):
    healthcheck = SERVICES[name].get("healthcheck")
    assert healthcheck and healthcheck.get("test"), f"`{name}` has no healthcheck"
    assert healthcheck["test"] != ["NONE"] and not healthcheck.get("disable"), f"`{name}` disables its healthcheck"


@pytest.mark.parametrize("name", ["redis", "postgres"])
def test_stateful_service_keeps_its_data_in_a_declared_named_volume(name):
    declared = set(COMPOSE.get("volumes") or {})
    sources = [v.split(":", 1)[0] if isinstance(v, str) else v.get("source") for v in SERVICES[name].get("volumes", [])]
    named = [s for s in sources if s and not s.startswith((".", "/", "~"))]
    assert named, f"`{name}` keeps its data in no named volume"
    for source in named:
        assert source in declared, f"`{name}` uses volume {source!r}, not declared under top-level volumes"


@pytest.mark.parametrize("name", PROJECT_SERVICES)
def test_project_service_shares_the_data_volume_and_settings(name):
    service = SERVICES[name]
    assert "data:/data" in service.get("volumes", []), f"`{name}` does not mount the `data` volume at /data"
    assert "data" in (COMPOSE.get("volumes") or {})
    env = service.get("environment") or {}
    assert isinstance(env, dict), f"`{name}`: use the shared x-syndicate-env mapping"
    for key in ("SYNDICATE_DATABASE_URL", "SYNDICATE_BROKER_URL", "SYNDICATE_SECRET_KEY", "SYNDICATE_DATA_DIR"):
        assert key in env, f"`{name}` does not set {key}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_can_be_satisfied(name):
    depends_on = SERVICES[name].get("depends_on") or {}
    if isinstance(depends_on, list):
        depends_on = {dep: {"condition": "service_started"} for dep in depends_on}
    for dep, spec in depends_on.items():
        assert dep in SERVICES, f"`{name}` depends on unknown service `{dep}`"
        condition = spec.get("condition", "service_started")
        if condition == "service_healthy":
            assert SERVICES[dep].get("healthcheck"), (
                f"`{name}` waits for `{dep}` to be healthy, but it has no healthcheck")
        elif condition == "service_completed_successfully":
            assert SERVICES[dep].get("restart", "no") == "no", (
                f"`{name}` waits for `{dep}` to complete, so `{dep}` must not restart"
            )


@pytest.mark.parametrize("name", PROJECT_SERVICES)
def test_project_command_is_in_exec_form(name):
    command = SERVICES[name].get("command")
    assert command, f"`{name}` has no command"
    assert isinstance(command, list) and all(isinstance(word, str) for word in command), (
        f"`{name}`: write the command as a YAML list of strings (exec form)"
    )


# --- commands exist in the project -----------------------------------------------------------


@pytest.mark.parametrize(("service", "where", "argv"), _project_commands())
def test_every_project_command_in_compose_exists(service, where, argv):
    if argv[0] == "syndicate":
        _assert_syndicate_command_exists(argv)
    elif argv[0] == "celery":
        _assert_celery_command_exists(argv)
    else:
        pytest.fail(f"`{service}` {where} runs {argv[0]!r}; expected `syndicate` or `celery`")


def test_dockerfile_default_command_exists():
    cmd = _dockerfile_cmd()
    assert cmd[0] == "syndicate", f"the Dockerfile CMD should run syndicate, not {cmd[0]!r}"
    _assert_syndicate_command_exists(cmd)


def test_docker_build_context_has_what_pip_install_needs():
    # `pip install .` in the image fails if a file named in pyproject.toml is missing.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    readme = project["project"].get("readme")
    if isinstance(readme, dict):
        readme = readme.get("file")
    if readme:
        assert (ROOT / readme).is_file(), f"pyproject.toml names readme {readme!r}, which does not exist"
    force_include = project["tool"]["hatch"]["build"]["targets"]["wheel"].get("force-include", {})
    for source in force_include:
        assert (ROOT / source).exists(), f"pyproject.toml force-includes {source!r}, which does not exist"
    ignored = set()
    dockerignore = ROOT / ".dockerignore"
    if dockerignore.exists():
        ignored = {line.strip().rstrip("/") for line in dockerignore.read_text().splitlines()}
    for needed in ["pyproject.toml", "src", *([readme] if readme else []), *force_include]:
        assert needed not in ignored, f".dockerignore excludes {needed!r}, which the build needs"


# --- settings --------------------------------------------------------------------------------


def _syndicate_variables() -> list[str]:
    names = set(re.findall(r"\bSYNDICATE_([A-Z0-9_]+)", COMPOSE_TEXT + "\n" + DOCKERFILE_TEXT))
    return sorted(names)


@pytest.mark.parametrize("name", _syndicate_variables())
def test_every_syndicate_variable_is_read_by_the_settings(name):
    source = CONFIG_MODULE.read_text()
    assert f'"{name}"' in source or f"'{name}'" in source, (
        f"SYNDICATE_{name} is set in docker-compose.yml or the Dockerfile, "
        f"but src/syndicate/config.py never reads {name!r}"
    )


def test_secret_key_must_be_given_and_x_credentials_are_optional():
    env = COMPOSE["x-syndicate-env"]
    assert env["SYNDICATE_SECRET_KEY"].startswith("${SYNDICATE_SECRET_KEY:?"), "a missing secret key must stop compose"
    x_keys = [key for key in env if key.startswith("SYNDICATE_X_")]
    assert x_keys, "pass the X credentials through"
    for key in x_keys:
        assert env[key] == f"${{{key}:-}}", f"{key} should default to empty (dry-run)"


# --- the secret key, made once ---------------------------------------------------------------


def _readme_key_line() -> str:
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("[ -f .env ]")]
    assert len(lines) == 1, "the README's Docker section should make .env with one line starting `[ -f .env ]`"
    return lines[0]


def _dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as compose reads its .env for ${…} in the compose file."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_the_readme_makes_the_secret_key_once_and_keeps_it(tmp_path):
    line = _readme_key_line()
    assert line in COMPOSE_TEXT, "docker-compose.yml's header should give the README's own line"
    for _ in range(2):  # a second `up` in the same folder, a new shell: the key stays
        subprocess.run(["sh", "-c", line], cwd=tmp_path, check=True, timeout=30)
        if _ == 0:
            first = _dotenv(tmp_path / ".env")
    key = _dotenv(tmp_path / ".env")["SYNDICATE_SECRET_KEY"]
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert _dotenv(tmp_path / ".env") == first
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600  # a key: for its owner alone


def test_the_dot_env_file_stays_out_of_git_and_the_image():
    for ignore in (".gitignore", ".dockerignore"):
        lines = {line.strip() for line in (ROOT / ignore).read_text().splitlines()}
        assert ".env" in lines, f"{ignore} should leave out .env: it holds the secret key"


@pytest.mark.parametrize("name", PROJECT_SERVICES)
def test_every_service_takes_the_secret_key_from_dot_env_or_stops_saying_how_to_make_it(name):
    value = SERVICES[name]["environment"]["SYNDICATE_SECRET_KEY"]
    variable, _, message = value.removeprefix("${").removesuffix("}").partition(":?")
    assert variable == "SYNDICATE_SECRET_KEY" and value.startswith("${") and value.endswith("}")
    assert ".env" in message and "README" in message, "a missing key should say how to make .env"


# --- stopping workers, building the image ------------------------------------------------------


def _seconds(duration: str) -> float:
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", str(duration))
    assert parts and any(parts.groups()), f"{duration!r} is not a compose duration like 4m or 1m30s"
    hours, minutes, seconds = (int(n or 0) for n in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def _mail_batch_worst_case() -> float:
    """One batch with the default settings on a slow server: six round trips to set the connection up
    (connect, greeting, EHLO, STARTTLS, EHLO, AUTH) each up to the SMTP timeout, one reply that times out
    and ends the batch, and each message DKIM-signed (~10 ms, README)."""
    from syndicate.config import Settings, SmtpSettings

    timeout = SmtpSettings("mail", 25, "none").timeout
    return 6 * timeout + timeout + Settings.batch_size * 0.010


@pytest.mark.parametrize(("name", "worst"), [
    ("worker-mail", _mail_batch_worst_case()),
    ("worker-ingest", 4 * 20),  # 50 feeds, 16 at a time, each within the feed timeout
    ("worker-social", 120),  # one post within its task's soft limit
])
def test_a_worker_is_given_longer_to_stop_than_its_longest_piece_of_work(name, worst):
    service = SERVICES[name]
    assert service["command"][0] == "celery", "exec form: celery is PID 1 and gets the SIGTERM itself"
    assert service.get("stop_signal", "SIGTERM") == "SIGTERM", "SIGTERM is Celery's warm shutdown"
    grace = _seconds(service.get("stop_grace_period", "10s"))
    assert grace > worst, f"`{name}` has {grace:.0f} s to stop; its work may take {worst:.0f} s"


def _dockerfile_instructions() -> list[str]:
    joined = re.sub(r"\\\n", "", DOCKERFILE_TEXT)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_image_installs_dependencies_before_it_copies_the_code():
    steps = _dockerfile_instructions()
    copies = [i for i, step in enumerate(steps) if step.startswith("COPY")]
    install = next(i for i, step in enumerate(steps) if step.startswith("RUN") and "requirements.txt" in step)
    assert steps[copies[0]] == "COPY pyproject.toml ./" and copies[0] < install
    assert not any(re.fullmatch(r"COPY \. \S+", steps[i]) for i in copies), "copy what each layer needs, not ."
    for code in ("src", "templates"):
        where = next(i for i in copies if steps[i].startswith(f"COPY {code} "))
        assert where > install, f"{code}/ is copied before the dependencies are installed"
    final = next(i for i, step in enumerate(steps) if step.startswith("RUN") and "pip install" in step and i > install)
    assert "--no-deps" in steps[final], "the code's own install should fetch nothing"


def test_the_image_installs_exactly_the_dependencies_pyproject_names(tmp_path):
    step = next(s for s in _dockerfile_instructions() if s.startswith("RUN") and "requirements.txt" in s)
    command = step.removeprefix("RUN ").split(" && ")[0].strip()
    assert command.startswith("python -c ") and command.endswith("> /tmp/requirements.txt")
    command = command.replace("/tmp/requirements.txt", "requirements.txt")
    command = command.replace("python", shlex.quote(sys.executable), 1)
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    subprocess.run(["sh", "-c", command], cwd=tmp_path, check=True, timeout=30)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["postgres"]
    assert (tmp_path / "requirements.txt").read_text().splitlines() == wanted
