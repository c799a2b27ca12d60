"""``confide login/logout/list/status/logs/stop/context`` on a MockTransport operator.

The commands get their transport through the documented seam: a parent
group's callback puts a :class:`ClientSeams` on the context chain, and the
real ``confide`` app (root callback, error handling and all) runs under it.
The credentials file lives in a per-test ``XDG_CONFIG_HOME``.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner, Result

from confide.cli import app
from confide.cli._account import ClientSeams
from confide.client import AppContext
from confide.wire import LaunchManifest
from support.app_doc import (
    APP_ID,
    app_json,
    launch,
)

URL = "https://operator.test"
TOKEN = "cft_alice-token"
OTHER_ID = uuid.UUID("0f0f0f0f-0000-4000-8000-000000000002")


@dataclass
class FakeOperator:
    """Just enough of the operator API, with one account (``TOKEN``)."""

    apps: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    logs: bytes = b"one\ntwo\nthree\n"
    #: When set, the logs are streamed from it (as ``?follow=true`` does).
    log_stream: Callable[[], Iterator[bytes]] | None = None
    down: bool = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"detail": "invalid or missing token"})
        parts = request.url.path.removeprefix("/api/v1/").split("/")
        if parts == ["me"]:
            return httpx.Response(
                200,
                json={
                    "account": "alice",
                    "token_id": 1,
                    "apps": len(self.apps),
                    "max_apps": 10,
                    "max_package_size": 1 << 20,
                },
            )
        if parts == ["apps"]:
            return httpx.Response(200, json={"apps": list(self.apps.values())})
        app_id = uuid.UUID(parts[1])
        if app_id not in self.apps:
            return httpx.Response(404, json={"detail": f"no app {app_id}"})
        record = self.apps[app_id]
        if len(parts) == 2 and request.method == "GET":
            return httpx.Response(200, json=record)
        if len(parts) == 2 and request.method == "DELETE":
            record.update(desired_state="stop", delete_requested=True)
            return httpx.Response(202, json=record)
        if parts[2] == "stop":
            record.update(desired_state="stop")
            return httpx.Response(202, json=record)
        if parts[2] == "logs":
            if self.log_stream is not None:
                return httpx.Response(200, content=self.log_stream())
            return httpx.Response(200, content=self.logs)
        raise AssertionError(f"unexpected {request.method} {request.url}")

    def sent(self, method: str) -> list[str]:
        return [r.url.path for r in self.requests if r.method == method]


@pytest.fixture(name="operator")
def operator_fixture() -> FakeOperator:
    return FakeOperator(
        apps={
            APP_ID: app_json(APP_ID),
            OTHER_ID: app_json(
                OTHER_ID,
                name="shop",
                tls="owner",
                domain="shop.example.com",
                status="on_error",
                status_detail="exited with 1",
            ),
        }
    )


@pytest.fixture(name="config_home")
def config_home_fixture(tmp_path: Path) -> Path:
    return tmp_path / "config"


@dataclass
class Cli:
    operator: FakeOperator
    config_home: Path
    interactive: bool | None = False

    def __call__(self, *args: str, input: str | None = None, **env: str | None) -> Result:
        seams = ClientSeams(
            transport=httpx.MockTransport(self.operator), interactive=self.interactive
        )
        outer = typer.Typer()

        @outer.callback()
        def _inject(ctx: typer.Context) -> None:
            ctx.obj = seams

        outer.add_typer(app, name="confide")
        environ: dict[str, str | None] = {
            "XDG_CONFIG_HOME": str(self.config_home),
            "CONFIDE_URL": None,
            "CONFIDE_TOKEN": None,
            "CONFIDE_TIMEOUT": None,
            "CONFIDE_DEBUG": None,
        }
        environ.update(env)
        return CliRunner().invoke(outer, ["confide", *args], input=input, env=environ)

    @property
    def credentials(self) -> Path:
        return self.config_home / "confide" / "credentials.json"

    def login(self) -> None:
        result = self("login", "--url", URL, "--token", TOKEN)
        assert result.exit_code == 0, result.output


@pytest.fixture(name="cli")
def cli_fixture(operator: FakeOperator, config_home: Path) -> Cli:
    return Cli(operator, config_home)


def _one_line_error(result: Result, words: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert words in lines[0], lines[0]
    assert TOKEN not in result.stderr


# -- login and logout ------------------------------------------------------------------------


def test_login_checks_the_token_then_stores_it_privately(cli: Cli) -> None:
    result = cli("login", "--url", URL + "/", "--token", TOKEN)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"logged in to {URL} as alice (2 of 10 apps)\n"
    assert cli.operator.sent("GET") == ["/api/v1/me"]
    assert json.loads(cli.credentials.read_text()) == {"version": 1, "url": URL, "token": TOKEN}
    assert stat.S_IMODE(cli.credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.credentials.parent.stat().st_mode) == 0o700


def test_login_with_a_refused_token_stores_nothing(cli: Cli) -> None:
    result = cli("login", "--url", URL, "--token", "cft_wrong")
    _one_line_error(result, "did not accept the token")
    assert "confide login" in result.stderr
    assert not cli.credentials.exists()


def test_login_reads_url_and_token_from_the_environment(cli: Cli) -> None:
    result = cli("login", CONFIDE_URL=URL, CONFIDE_TOKEN=TOKEN)
    assert result.exit_code == 0, result.output
    assert json.loads(cli.credentials.read_text())["token"] == TOKEN


def test_login_asks_for_the_token_on_a_terminal_only(cli: Cli) -> None:
    _one_line_error(cli("login", "--url", URL), "no token")
    cli.interactive = True
    result = cli("login", "--url", URL, input=TOKEN + "\n")
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output  # hidden input
    assert json.loads(cli.credentials.read_text())["token"] == TOKEN


def test_login_warns_of_a_cleartext_token(cli: Cli) -> None:
    result = cli("login", "--url", "http://operator.test", "--token", TOKEN)
    assert result.exit_code == 0, result.output
    assert "travels in clear" in result.stderr
    assert "travels in clear" not in cli("login", "--url", "http://127.0.0.1:8000",
                                         "--token", TOKEN).stderr  # fmt: skip


def test_logout(cli: Cli) -> None:
    cli.login()
    result = cli("logout")
    assert result.exit_code == 0 and "logged out" in result.stdout
    assert not cli.credentials.exists()
    again = cli("logout")
    assert again.exit_code == 0 and "not logged in" in again.stdout
    _one_line_error(cli("list"), "not logged in")


# -- which operator, which token -------------------------------------------------------------


def test_the_environment_overrides_the_stored_credentials(cli: Cli) -> None:
    result = cli("list", "--json", CONFIDE_URL=URL, CONFIDE_TOKEN=TOKEN)
    assert result.exit_code == 0, result.output  # nothing stored, nothing needed
    cli.login()
    _one_line_error(cli("list", CONFIDE_TOKEN="cft_other"), "did not accept the token")


def test_the_stored_token_never_goes_to_another_url(cli: Cli) -> None:
    cli.login()
    before = len(cli.operator.requests)
    result = cli("list", "--url", "https://evil.test")
    _one_line_error(result, "no token for https://evil.test")
    assert len(cli.operator.requests) == before


def test_a_credentials_file_others_can_read_is_refused(cli: Cli) -> None:
    cli.login()
    os.chmod(cli.credentials, 0o644)
    _one_line_error(cli("list"), f"chmod 600 {cli.credentials}")


def test_an_operator_that_cannot_be_reached(cli: Cli) -> None:
    cli.login()
    cli.operator.down = True
    _one_line_error(cli("list"), f"cannot reach the operator at {URL}: Connection refused")


# -- reading ---------------------------------------------------------------------------------


def test_list_table_and_json(cli: Cli) -> None:
    cli.login()
    result = cli("list")
    assert result.exit_code == 0, result.output
    header, first, second = result.stdout.strip().splitlines()
    assert header.split() == ["id", "name", "status", "tls", "domain", "expires"]
    assert first.split()[:5] == [str(APP_ID), "hello", "running", "ratls", f"{APP_ID}.confide.test"]
    assert second.split()[:5] == [str(OTHER_ID), "shop", "on_error", "owner", "shop.example.com"]
    assert "2030-03-01" in first
    doc = json.loads(cli("list", "--json").stdout)
    assert [a["id"] for a in doc["apps"]] == [str(APP_ID), str(OTHER_ID)]
    assert doc["apps"][0]["fingerprint"] == launch(APP_ID).measurement().hex()


def test_list_with_no_apps(cli: Cli) -> None:
    cli.operator.apps.clear()
    cli.login()
    result = cli("list")
    assert result.exit_code == 0 and result.stdout == "" and "no apps" in result.stderr
    assert json.loads(cli("list", "--json").stdout) == {"apps": []}


def test_status_shows_where_the_app_is_and_its_fingerprint_inputs(cli: Cli) -> None:
    cli.login()
    result = cli("status", str(OTHER_ID))
    assert result.exit_code == 0, result.output
    rows = [line.split(None, 1) for line in result.stdout.strip().splitlines()]
    fields = {row[0]: row[1].strip() for row in rows}
    assert fields["status"] == "on_error (exited with 1)"
    assert fields["router"] == "127.0.0.1:9443"
    assert fields["domains"] == f"{OTHER_ID}.confide.test"
    assert fields["fingerprint"] == launch(OTHER_ID).measurement().hex()
    assert fields["package_sha256"] == "00" * 32
    assert fields["runtime_sha256"].startswith(bytes(range(32)).hex())
    assert "not this Confide's release" in fields["runtime_sha256"]
    assert (fields["launch_tls"], fields["ratls_expiry"]) == ("ratls", "1900000000")
    doc = json.loads(cli("status", str(APP_ID), "--json").stdout)
    assert doc["router"] == {"host": "127.0.0.1", "port": 9443}
    assert LaunchManifest.from_json(json.dumps(doc["launch"])) == launch(APP_ID)
    assert doc["runtime_is_this_release"] is False


def test_status_warns_when_the_operators_fingerprint_disagrees(cli: Cli) -> None:
    cli.operator.apps[APP_ID]["fingerprint"] = "ab" * 32
    cli.login()
    result = cli("status", str(APP_ID), "--json")
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "ab" * 32 in result.stderr
    assert json.loads(result.stdout)["fingerprint"] == launch(APP_ID).measurement().hex()


@pytest.mark.parametrize("command", ["status", "logs", "stop", "context"])
def test_an_unknown_app(cli: Cli, command: str) -> None:
    cli.login()
    unknown = uuid.uuid4()
    args = (
        ["--export", str(unknown)]
        if command == "context"
        else [str(unknown), "-y"][: 2 if command == "stop" else 1]
    )
    _one_line_error(cli(command, *args), f"no app {unknown} on this operator (or not yours)")


def test_an_app_id_that_is_not_a_uuid(cli: Cli) -> None:
    cli.login()
    _one_line_error(cli("status", "hello"), "an app ID is a UUID")


def test_logs(cli: Cli) -> None:
    cli.login()
    result = cli("logs", str(APP_ID), "--tail", "3")
    assert result.exit_code == 0 and result.stdout == "one\ntwo\nthree\n"
    (request,) = [r for r in cli.operator.requests if r.url.path.endswith("/logs")]
    assert request.url.params["tail"] == "3" and "follow" not in request.url.params


def test_logs_follow(cli: Cli) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"a\nb"
        yield b"\nc"

    cli.operator.log_stream = chunks
    cli.login()
    result = cli("logs", str(APP_ID), "--follow")
    assert result.exit_code == 0, result.output
    assert result.stdout == "a\nb\nc\n"
    assert cli.operator.requests[-1].url.params["follow"] == "true"


# -- stop ------------------------------------------------------------------------------------


def test_stop_needs_yes_when_stdin_is_not_a_terminal(cli: Cli) -> None:
    cli.login()
    _one_line_error(cli("stop", str(APP_ID)), "needs confirmation: give -y")
    assert cli.operator.sent("POST") == [] and cli.operator.sent("DELETE") == []


def test_stop_with_yes(cli: Cli) -> None:
    cli.login()
    result = cli("stop", str(APP_ID), "-y")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{APP_ID}: stop requested (status running)\n"
    assert cli.operator.sent("POST") == [f"/api/v1/apps/{APP_ID}/stop"]


def test_stop_and_delete(cli: Cli) -> None:
    cli.login()
    result = cli("stop", str(APP_ID), "--delete", "--yes")
    assert result.exit_code == 0, result.output
    assert "deletion requested" in result.stdout
    assert cli.operator.sent("DELETE") == [f"/api/v1/apps/{APP_ID}"]
    assert cli.operator.sent("POST") == []


@pytest.mark.parametrize(("answer", "code", "stopped"), [("y\n", 0, True), ("n\n", 1, False)])
def test_stop_asks_on_a_terminal(cli: Cli, answer: str, code: int, stopped: bool) -> None:
    cli.login()
    cli.interactive = True
    result = cli("stop", str(APP_ID), input=answer)
    assert result.exit_code == code, result.output
    assert "Stop the app hello" in result.stderr
    assert bool(cli.operator.sent("POST")) is stopped


# -- context ---------------------------------------------------------------------------------


def test_context_export_to_stdout_and_to_a_file(cli: Cli, tmp_path: Path) -> None:
    cli.login()
    result = cli("context", "--export", str(APP_ID))
    assert result.exit_code == 0, result.output
    context = AppContext.from_json(result.stdout)
    assert context.app_id == APP_ID and context.operator_url == URL
    assert context.fingerprint == launch(APP_ID).measurement()
    assert TOKEN not in result.stdout

    out = tmp_path / "hello.context.json"
    result = cli("context", "--export", str(APP_ID), "--output", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert f"to {out}" in result.stderr
    assert AppContext.load(out) == context
    assert TOKEN not in out.read_text()


def test_context_needs_export(cli: Cli) -> None:
    cli.login()
    result = cli("context")
    assert result.exit_code == 2 and "--export" in result.stderr
