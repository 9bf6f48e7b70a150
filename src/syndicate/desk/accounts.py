"""Social accounts: the list with each one's mode and status; connecting one (as `syndicate account add`: the
network's server or handle and its credentials, which are stored encrypted and never shown again); pausing,
disabling and deleting one, each removal behind a page that says first what it takes along."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from syndicate.db import transaction
from syndicate.desk.core import (
    Svc,
    api,
    api_editor,
    back,
    confirmation,
    csrf_checked,
    editor,
    editor_zone,
    page,
    pages,
    ticked,
)
from syndicate.errors import InvalidInput
from syndicate.services import Services
from syndicate.social import accounts

# The settings the connect form offers; the rest keep their defaults (`syndicate account edit` changes them).
FIELDS = ("name", "network", "instance", "handle", "timezone", "window")


def _list(session, env_x: bool) -> list[dict]:
    return [accounts.describe(a, env_x) for a in accounts.all_accounts(session)]


def _connect(svc: Services, typed: dict, secrets: dict[str, str], dry_run: bool) -> dict:
    """Check and store a new account, as the CLI's `account add` does (the same domain function): its record."""
    network = typed.get("network", "").strip()
    if network not in accounts.NETWORKS:
        raise InvalidInput(f"choose the network: {', '.join(accounts.NETWORKS)}")
    settings = {k: typed[k].strip() for k in ("instance", "handle", "timezone", "window") if typed.get(k, "").strip()}
    settings["dry_run"] = dry_run
    credentials = None
    if not dry_run:  # the CLI asks for every required one; here a blank field is refused, naming it
        wanted = accounts.SECRETS[network] + accounts.OPTIONAL_SECRETS[network]
        credentials = accounts.check_credentials(network, {k: secrets.get(k, "").strip() for k in wanted})
    with transaction(svc.Session) as session:
        row = accounts.add(session, svc.settings.secret_key, typed.get("name", "").strip(), network, settings,
                           credentials)
        return accounts.describe(row, svc.settings.x is not None)


def _accounts_page(request: Request, svc: Services, name: str, status: int = 200, typed: dict | None = None,
                   error: str | None = None, notice: str | None = None) -> HTMLResponse:
    with transaction(svc.Session) as session:
        rows = _list(session, svc.settings.x is not None)
    form = dict.fromkeys(FIELDS, "") | dict(dry_run=False) | (
        typed or dict(network="mastodon", timezone=editor_zone(request).key, window="07:00-22:00"))
    return page("accounts", request, status, editor=name, accounts=rows, form=form, error=error, notice=notice,
                networks=accounts.NETWORKS, secrets=accounts.SECRETS, optional=accounts.OPTIONAL_SECRETS)


@pages.get("/accounts", response_class=HTMLResponse)
def accounts_page(request: Request, svc: Svc, name: str = Depends(editor), connected: str = ""):
    notice = (f"Connected {connected}. Check its credentials with `syndicate account test {connected}`; stories "
              "first seen from now on get a teaser on it.") if accounts.NAME.fullmatch(connected) else None
    return _accounts_page(request, svc, name, notice=notice)


@pages.post("/accounts", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
async def connect_page(request: Request, svc: Svc, name: str = Depends(editor)):
    form = await request.form()
    typed = {k: str(form.get(k, "")) for k in FIELDS}
    network = typed["network"].strip()
    # Each network's secrets have their own fields (x_access_token, mastodon_access_token, …): only the chosen
    # network's are read, and none is ever put back in the page.
    secrets = {key: str(form.get(f"{network}_{key}", "")) for key in
               accounts.SECRETS.get(network, ()) + accounts.OPTIONAL_SECRETS.get(network, ())}
    dry_run = ticked(str(form.get("dry_run", "")))
    try:
        added = await run_in_threadpool(_connect, svc, typed, secrets, dry_run)
    except InvalidInput as e:  # the form again with what was typed, the secrets left blank
        return await run_in_threadpool(_accounts_page, request, svc, name, 400, typed | {"dry_run": dry_run},
                                       f"{e} — nothing was saved; type the credentials again")
    return back(f"/desk/accounts?connected={added['name']}#account-{added['name']}")


# ── disabling and deleting ───────────────────────────────────────────────────

REMOVALS = {"disable": ("Disable", accounts.disable_plan, accounts.disable),
            "delete": ("Delete", accounts.delete_plan, accounts.delete)}


def _remove(svc: Services, account_name: str, action: str, editor_name: str) -> dict:
    _, _, act = REMOVALS[action]
    with transaction(svc.Session) as session:
        plan = act(session, accounts.by_name(session, account_name), editor_name)
    return dict(name=account_name, done=action + "d", consequences=plan.consequences)


def _removal_page(request: Request, svc: Services, account_name: str, action: str, name: str,
                  error: str | None = None) -> HTMLResponse:
    verb, planned, _ = REMOVALS[action]
    with transaction(svc.Session) as session:
        plan = planned(session, accounts.by_name(session, account_name))
    return confirmation(request, name, verb, plan, f"/desk/accounts/{account_name}/{action}",
                        f"/desk/accounts#account-{account_name}", error)


def _removal_post(request: Request, svc: Services, account_name: str, action: str, name: str):
    try:
        _remove(svc, account_name, action, name)
    except InvalidInput as e:  # it changed since the page was shown: the page again, saying why
        return _removal_page(request, svc, account_name, action, name, str(e))
    return back(f"/desk/accounts#account-{account_name}" if action == "disable" else "/desk/accounts")


# These come before the Today page's /accounts/{name}/{action} (pause, resume, pictures), which would take them.
@pages.get("/accounts/{account_name}/disable", response_class=HTMLResponse)
def disable_page(request: Request, account_name: str, svc: Svc, name: str = Depends(editor)):
    """What disabling the account does, and the button that does it."""
    return _removal_page(request, svc, account_name, "disable", name)


@pages.post("/accounts/{account_name}/disable", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def disable_account(request: Request, account_name: str, svc: Svc, name: str = Depends(editor)):
    return _removal_post(request, svc, account_name, "disable", name)


@pages.get("/accounts/{account_name}/delete", response_class=HTMLResponse)
def delete_page(request: Request, account_name: str, svc: Svc, name: str = Depends(editor)):
    """What deleting the account takes with it (or why it can't be), and the button."""
    return _removal_page(request, svc, account_name, "delete", name)


@pages.post("/accounts/{account_name}/delete", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def delete_account(request: Request, account_name: str, svc: Svc, name: str = Depends(editor)):
    return _removal_post(request, svc, account_name, "delete", name)


@pages.post("/accounts/{account_name}/enable", dependencies=[Depends(csrf_checked)])
def enable_account(account_name: str, svc: Svc, name: str = Depends(editor)):
    with transaction(svc.Session) as session:
        accounts.enable(session, accounts.by_name(session, account_name), name)
    return back(f"/desk/accounts#account-{account_name}")


# ── the same, for scripts ────────────────────────────────────────────────────


class NewAccount(BaseModel):
    name: str  # lower-case letters, digits, '-' and '_', e.g. x-newsroom
    network: str  # x | mastodon | bluesky
    instance: str = ""  # Mastodon: e.g. https://mastodon.social
    handle: str = ""  # Bluesky: e.g. newsroom.bsky.social
    timezone: str = ""  # of the posting window (default UTC)
    window: str = ""  # e.g. 07:00-22:00, or always (default 07:00-22:00)
    dry_run: bool = False  # record the exact requests, call nothing; no credentials needed
    # Mastodon: access_token; Bluesky: app_password; X: consumer_key, consumer_secret, access_token,
    # access_token_secret (and bearer_token, optional). Stored encrypted, never answered back.
    credentials: dict[str, str] = {}


@api.get("/accounts", tags=["social"])
def accounts_json(svc: Svc, name: str = Depends(api_editor)) -> list[dict]:
    """Every social account: network, mode (live or dry-run), status (paused or disabled, and why); never its
    credentials."""
    with transaction(svc.Session) as session:
        return _list(session, svc.settings.x is not None)


@api.post("/accounts", tags=["social"], status_code=201)
def connect_json(body: NewAccount, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Connect an account, as `syndicate account add` does; answers it as listed (without its credentials)."""
    return _connect(svc, body.model_dump(exclude={"credentials", "dry_run"}), body.credentials, body.dry_run)


@api.post("/accounts/{account_name}/disable", tags=["social"])
def disable_json(account_name: str, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Post nothing more on an account: its waiting posts are skipped (each says why), nothing new is planned;
    what it published stays. `consequences` says so in words."""
    return _remove(svc, account_name, "disable", name)


@api.post("/accounts/{account_name}/enable", tags=["social"])
def enable_json(account_name: str, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Post on a disabled account again, for stories first seen from now on."""
    with transaction(svc.Session) as session:
        return accounts.describe(accounts.enable(session, accounts.by_name(session, account_name), name),
                                 svc.settings.x is not None)


@api.delete("/accounts/{account_name}", tags=["social"])
def delete_json(account_name: str, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Delete an account that never published, with its unpublished posts; one that published is refused (422):
    its posts' rows are the record of what went out, and what withdrawing a story takes back. Disable it."""
    return _remove(svc, account_name, "delete", name)
