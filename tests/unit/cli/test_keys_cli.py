"""``confide keys create|show`` and the client's on-disk release state (owner key, logs seen)."""

from __future__ import annotations

import dataclasses
import json
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from confide.cli import app
from confide.cli._remote_test import _proxy_argv
from confide.client import AppContext, CheckpointStore, OwnerKeyStore, SeenLog
from confide.errors import UsageError
from confide.release import Checkpoint, LogKey, OwnerPublicKey, root
from confide.wire import HostPort, LaunchManifest, TlsMode


def run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "CONFIDE_OWNER_KEY": ""}
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_create_then_show(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, "keys", "create")
    assert code == 0, err
    public = OwnerPublicKey.from_text(out)
    path = tmp_path / "config" / "confide" / "owner.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert public.key_id in err
    code, out, _ = run(tmp_path, "keys", "show", "--json")
    assert code == 0
    shown = json.loads(out)
    assert (shown["public_key"], shown["key_id"]) == (public.to_text(), public.key_id)


def test_create_never_overwrites(tmp_path: Path) -> None:
    assert run(tmp_path, "keys", "create")[0] == 0
    before = (tmp_path / "config" / "confide" / "owner.key").read_bytes()
    code, out, err = run(tmp_path, "keys", "create")
    assert (code, out) == (2, "")
    assert "already exists" in err and "Traceback" not in err
    assert (tmp_path / "config" / "confide" / "owner.key").read_bytes() == before
    assert [p.name for p in (tmp_path / "config" / "confide").iterdir()] == ["owner.key"]


def test_show_without_a_key_says_what_to_do(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, "keys", "show")
    assert (code, out) == (2, "")
    assert "confide keys create" in err and len(err.strip().splitlines()) == 1


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    store = OwnerKeyStore(tmp_path / "owner.key")
    store.create()
    store.path.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        store.load()


def test_a_linked_key_is_refused(tmp_path: Path) -> None:
    store = OwnerKeyStore(tmp_path / "owner.key")
    store.create()
    link = tmp_path / "link.key"
    link.symlink_to(store.path)
    with pytest.raises(UsageError, match="not a link"):
        OwnerKeyStore(link).load()


def test_load_or_create_creates_once(tmp_path: Path) -> None:
    store = OwnerKeyStore(tmp_path / "k" / "owner.key")
    key, created = store.load_or_create()
    assert created
    assert store.load_or_create() == (key, False)


LOG = LogKey("operator.example/log", bytes(32))


def seen(size: int) -> SeenLog:
    checkpoint = Checkpoint(LOG.name, size, root([bytes(32)] * size))
    return SeenLog(LOG.verifier, checkpoint, checkpoint.sign(LOG))


def test_the_last_checkpoint_is_kept_per_operator(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "state")
    assert store.load("https://operator.example") is None
    store.save("https://operator.example/", seen(1))
    store.save("https://operator.example", seen(2))
    assert store.load("https://operator.example") == seen(2)
    assert store.load("https://other.example") is None
    path = store.path("https://operator.example")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_state_file_of_another_operator_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "state")
    store.save("https://operator.example", seen(1))
    store.path("https://operator.example").rename(store.path("https://other.example"))
    with pytest.raises(UsageError, match="malformed"):
        store.load("https://other.example")


def test_a_state_file_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "state")
    store.save("https://operator.example", seen(1))
    path = store.path("https://operator.example")
    path.write_text(path.read_text().replace("{", '{"operator": "https://evil.example",', 1))
    with pytest.raises(UsageError, match="malformed: .*duplicate key 'operator'"):
        store.load("https://operator.example")


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "app.example", "--owner", "ed25519:" + "A" * 43 + "="],
        ["proxy", "app.example", "--owner", "ed25519:" + "A" * 43 + "=", "--pccs-url", "x"],
    ],
    ids=["verify", "proxy"],
)
def test_an_owner_key_needs_the_operators_log(tmp_path: Path, args: list[str]) -> None:
    code, out, err = run(tmp_path, *args)
    assert (code, out) == (2, "")
    assert "--owner needs --operator URL" in err


def test_a_malformed_owner_key_is_one_line(tmp_path: Path) -> None:
    code, _, err = run(
        tmp_path, "verify", "a.example", "--owner", "ssh-ed25519 AAAA", "--operator", "http://x"
    )
    assert code == 2
    assert "an owner key looks like ed25519:BASE64" in err and "Traceback" not in err


def _context(tee: str) -> AppContext:
    app_id = uuid.UUID(int=7)
    launch = LaunchManifest(
        runtime_sha256=bytes(32),
        package_sha256=bytes(32),
        app_id=app_id,
        application="app:app",
        tls=TlsMode.RATLS,
        ratls_expiry=1900000000,
        certificate_sha256=None,
        san=(f"{app_id}.confide.test",),
        subject=None,
    )
    return AppContext(
        app_id=app_id,
        name="hello",
        project="demo",
        operator_url="https://operator.test",
        domains=(f"{app_id}.confide.test",),
        router=HostPort("router.confide.test", 443),
        tls=TlsMode.RATLS,
        tee=tee,
        expires_at=datetime(2030, 3, 1, tzinfo=UTC),
        launch=launch,
    )


@pytest.mark.parametrize(
    ("tee", "expected"),
    [
        ("simulation", ["--operator", "https://operator.test"]),
        ("gramine", ["--operator", "https://operator.test", "--pccs-url"]),
    ],
)
def test_confide_test_hands_the_owner_key_and_its_log_to_the_proxy(
    tmp_path: Path, tee: str, expected: list[str]
) -> None:
    argv = _proxy_argv(
        _context(tee),
        tmp_path / "ctx.json",
        tmp_path / "ready",
        connect=None,
        operator=None,
        pccs_url=None,
        allow_simulation=False,
        owner="ed25519:KEY",
    )
    assert argv[argv.index("--owner") + 1] == "ed25519:KEY"
    found = [a for a in argv if a in ("--operator", "--pccs-url", "https://operator.test")]
    assert found == expected


@pytest.mark.parametrize(
    ("router", "connect"),
    [
        (HostPort("router.confide.test", 443), "router.confide.test:443"),
        (HostPort("2001:db8::1", 8443), "[2001:db8::1]:8443"),
    ],
)
def test_confide_test_hands_the_router_as_one_host_port_even_ipv6(
    tmp_path: Path, router: HostPort, connect: str
) -> None:
    argv = _proxy_argv(
        dataclasses.replace(_context("simulation"), router=router),
        tmp_path / "ctx.json",
        tmp_path / "ready",
        connect=None,
        operator=None,
        pccs_url=None,
        allow_simulation=False,
    )
    assert argv[argv.index("--connect") + 1] == connect
    assert HostPort.parse(connect) == router  # what the proxy reads back


def test_confide_test_hands_the_td_reference_values_to_the_proxy(tmp_path: Path) -> None:
    """A TD is checked against the operator's published guest image (ADR 0022), in tests too."""
    reference = tmp_path / "reference.json"

    def argv(td_reference: Path | None) -> list[str]:
        return _proxy_argv(
            _context("tdx"),
            tmp_path / "ctx.json",
            tmp_path / "ready",
            connect=None,
            operator=None,
            pccs_url=None,
            allow_simulation=False,
            td_reference=td_reference,
        )

    given = argv(reference)
    assert given[given.index("--td-reference") + 1] == str(reference)
    assert "--td-reference" not in argv(None)
