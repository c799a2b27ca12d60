"""``confide operator token ...`` and ``confide operator migrate``, on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from confide.cli import app
from confide.operator import Database, authenticate_token, utc_now
from support.database import dump


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _invoke(runner: CliRunner, data: Path, url: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(
        app,
        ["operator", *args],
        env={"CONFIDE_OPERATOR_DATA": str(data), "CONFIDE_OPERATOR_DATABASE_URL": url},
    )
    return result.exit_code, result.stdout, result.stderr


def test_token_lifecycle(runner: CliRunner, tmp_path: Path, database_url: str) -> None:
    data = tmp_path / "data"
    code, out, err = _invoke(runner, data, database_url, "migrate")
    assert code == 0 and out == "" and "up to date" in err
    code, out, err = _invoke(runner, data, database_url, "token", "create", "--account", "alice")
    assert code == 0, err
    token = out.strip()
    assert token.startswith("cfd_") and "shown only this once" in err and token not in err
    code, out, _ = _invoke(
        runner, data, database_url, "token", "create", "--account", "bob", "--json"
    )
    bob = json.loads(out)
    assert code == 0 and bob["account"] == "bob" and bob["token"].startswith("cfd_")

    db = Database.open(database_url)
    try:
        stored = dump(db)
        assert token not in stored and bob["token"] not in stored
        with db.session() as s:
            found = authenticate_token(s, token, now=utc_now())
            assert found is not None and found.account == "alice"
        code, out, _ = _invoke(runner, data, database_url, "token", "list", "--json")
        listed = json.loads(out)["tokens"]
        assert code == 0 and [(t["id"], t["account"]) for t in listed] == [
            (found.token_id, "alice"),
            (bob["id"], "bob"),
        ]
        assert token not in out and "token" not in listed[0]
        code, out, _ = _invoke(runner, data, database_url, "token", "list")
        assert code == 0 and "alice" in out and token not in out
        code, out, _ = _invoke(runner, data, database_url, "token", "revoke", str(found.token_id))
        assert code == 0 and f"revoked token {found.token_id} of account alice" in out
        with db.session() as s:
            assert authenticate_token(s, token, now=utc_now()) is None
            assert authenticate_token(s, bob["token"], now=utc_now()) is not None
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "revoke", "42"], "no token with id 42"),
        (["token", "create", "--account", "Not Valid"], "account name 'Not Valid'"),
    ],
)
def test_failures_are_one_line_and_exit_2(
    runner: CliRunner, tmp_path: Path, database_url: str, args: list[str], message: str
) -> None:
    code, out, err = _invoke(runner, tmp_path / "data", database_url, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_an_unreachable_database_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody:secret@127.0.0.1:1/none?connect_timeout=2"
    code, out, err = _invoke(runner, tmp_path, url, "migrate")
    assert code == 2 and out == "" and err.startswith("error: cannot migrate the database")
    assert "secret" not in err  # the password is never shown
