"""End to end: an app user who knows only the owner's public key verifies a release.

One ``confide operator serve`` subprocess (simulated TEE, loopback, port 0);
the CLI runs in this process. The owner deploys with an owner key (the release
is signed and logged, or the deploy stops); a user with nothing but the
owner's public key and the operator's URL runs ``confide verify DOMAIN --owner
KEY``, and again for the owner's next deploy. Then each way the release check
must fail is made real, and each fails with its own code: another owner's key
(``release.owner``), a statement the operator shows but its log does not hold
(``log.inclusion``), an expired statement (``release.expired``), a revoked
release (``release.revoked``) and a log rewritten after the user saw it
(``log.consistency``, also caught by ``confide log audit``).
"""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from confide.cli import app
from confide.client import (
    AppContext,
    ChallengeClient,
    CheckpointStore,
    EnclavePolicy,
    EnclaveVerifier,
    OperatorClient,
    OperatorReleaseLog,
    SimulationEvidence,
    fetch_enclave_certificate,
)
from confide.errors import ReleaseError
from confide.release import (
    Checkpoint,
    LogKey,
    OwnerKey,
    Release,
    leaf_hash,
    root,
)
from confide.runtime import start_child
from confide.wire import HostPort
from support.operators import OperatorProcess, create_token, operator_running
from support.runtimes import CONFIDE, DEADLINE, EXAMPLES, HOST, poll

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", name="operator")
def operator_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with operator_running(tmp_path_factory.mktemp("releases") / "data") as operator:
        yield operator


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def project_file(folder: Path) -> Path:
    (folder / "tests").mkdir(parents=True)
    project = folder / "confide.toml"
    project.write_text(
        'name = "hello"\n'
        'python_application = "app:app"\n'
        'healthcheck_endpoint = "/"\n'
        'tests_cmd = "pytest"\n'
        "tests_requirements = []\n\n"
        "[cloud]\n"
        f"code = {json.dumps(str(EXAMPLES / 'helloworld'))}\n"
        'tests = "tests"\n'
        'project = "default"\n'
        'hardware = "small"\n'
    )
    return project


def error_code(result: Result) -> str:
    assert result.exit_code == 1, result.output
    code: str = json.loads(result.stdout)["error"]["code"]
    return code


def rewrite(db: Path, log_key: LogKey, leaves: list[bytes]) -> None:
    """Replace the whole log by ``leaves`` and sign its checkpoint: an operator rewriting
    history with its own key."""
    hashes = [leaf_hash(leaf) for leaf in leaves]
    note = Checkpoint(log_key.name, len(leaves), root(hashes)).sign(log_key)
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(db) as conn:
        old = dict(conn.execute('SELECT "index", fingerprint FROM log_entries').fetchall())
        conn.execute("DELETE FROM log_entries")
        conn.execute("DELETE FROM log_checkpoints")
        for i, leaf in enumerate(leaves):
            conn.execute(
                'INSERT INTO log_entries ("index", leaf, leaf_hash, kind, fingerprint, '
                "owner_key_id, account_id, created_at) VALUES (?, ?, ?, 'release', ?, 'x', 0, ?)",
                (i, leaf, hashes[i], old.get(i - 1, old[0]), now),
            )
        conn.execute(
            "INSERT INTO log_checkpoints (size, root, note, created_at) VALUES (?, ?, ?, ?)",
            (len(leaves), hashes and root(hashes), note.decode(), now),
        )


def log_key_of(data_dir: Path) -> LogKey:
    _, name, seed = (data_dir / "log-key").read_text().split()
    return LogKey(name, base64.b64decode(seed))


def test_a_user_with_only_the_owner_key_verifies_and_each_failure_has_its_code(
    operator: OperatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "user-state"))
    token = create_token(operator.data_dir, "owner")
    router = f"{HOST}:{operator.router_port}"
    owner_file = tmp_path / "owner" / "owner.key"
    project = project_file(tmp_path / "project")
    deployed = cli(
        "deploy",
        "--path",
        str(project),
        "--connect",
        router,
        "--url",
        operator.api_url,
        "--token",
        token,
        "--timeout",
        "1",
        "--allow-simulation",
        "--key-file",
        str(owner_file),
        "--release-version",
        "1.0",
        "--release-valid-days",
        "1",
        "--json",
    )
    assert deployed.exit_code == 0, deployed.output
    assert "created your owner key" in deployed.stderr
    assert json.loads(deployed.stdout)["release"]["log_index"] == 0
    owner = OwnerKey.from_file_bytes(owner_file.read_bytes())
    public = owner.public_key.to_text()
    context = AppContext.load(next((project.parent / ".confide").glob("*.json")))
    domain = context.domains[0]

    def verify(key: str) -> Result:
        return cli(
            "verify",
            domain,
            "--owner",
            key,
            "--operator",
            operator.api_url,
            "--connect",
            router,
            "--allow-simulation",
            "--json",
        )

    # The user knows only the owner's public key (and the operator's URL).
    done = verify(public)
    assert done.exit_code == 0, done.output
    # ... and the enclave answered a fresh challenge on this connection (ADR 0021).
    assert len(json.loads(done.stdout)["fresh"]["nonce"]) == 64
    release: dict[str, Any] = json.loads(done.stdout)["release"]
    assert release["owner_key_id"] == owner.public_key.key_id
    assert release["fingerprint"] == context.fingerprint.hex()
    assert (release["version"], release["log_index"]) == ("1.0", 0)
    assert release["checkpoint"]["size"] == 1

    # A redeploy (a new app, a new fingerprint) keeps verifying with the owner key alone; the
    # user's last checkpoint (size 1) is proven to be a prefix of the new one.
    again = project_file(tmp_path / "project2")
    redeployed = cli(
        "deploy",
        "--path",
        str(again),
        "--connect",
        router,
        "--url",
        operator.api_url,
        "--token",
        token,
        "--timeout",
        "1",
        "--allow-simulation",
        "--key-file",
        str(owner_file),
        "--release-version",
        "1.1",
    )
    assert redeployed.exit_code == 0, redeployed.output
    assert "created your owner key" not in redeployed.stderr
    second = AppContext.load(next((again.parent / ".confide").glob("*.json")))
    assert second.fingerprint != context.fingerprint
    done_again = cli(
        "verify",
        second.domains[0],
        "--owner",
        public,
        "--operator",
        operator.api_url,
        "--connect",
        router,
        "--allow-simulation",
        "--json",
    )
    assert done_again.exit_code == 0, done_again.output
    release_again = json.loads(done_again.stdout)["release"]
    assert (release_again["version"], release_again["log_index"]) == ("1.1", 1)
    assert release_again["checkpoint"]["size"] == 2

    # The proxy takes the owner key alone too (and checks each new certificate the same way).
    ready = tmp_path / "proxy.url"
    err_path = tmp_path / "proxy.err"
    proxy_args = [str(CONFIDE), "proxy", domain, "--listen", f"{HOST}:0", "--connect", router]
    proxy_args += ["--operator", operator.api_url, "--owner", public, "--allow-simulation"]
    with err_path.open("wb") as err:
        proxy = start_child([*proxy_args, "--ready-file", str(ready)], env=None, output=err)
    try:
        poll(lambda: ready.is_file() or proxy.poll() is not None, "the proxy to start")
        assert ready.is_file(), err_path.read_text()
        assert httpx.get(ready.read_text().strip(), timeout=DEADLINE).text == "Hello world"
        assert f"release of owner {owner.public_key.key_id}" in err_path.read_text()
    finally:
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(DEADLINE) == 0, err_path.read_text()

    # Another owner's key.
    assert error_code(verify(OwnerKey.generate().public_key.to_text())) == "release.owner"

    # A statement the operator shows but its log does not hold: the leaf served is not the
    # one the tree was built from.
    db = operator.data_dir / "operator.db"
    unlogged = Release.of(
        context.launch, not_before=datetime.now(UTC), validity=timedelta(days=2), version="evil"
    )
    with sqlite3.connect(db) as conn:
        (original,) = conn.execute('SELECT leaf FROM log_entries WHERE "index" = 0').fetchone()
        conn.execute(
            'UPDATE log_entries SET leaf = ? WHERE "index" = 0',
            (unlogged.sign(owner).to_json(),),
        )
    assert error_code(verify(public)) == "log.inclusion"
    with sqlite3.connect(db) as conn:
        conn.execute('UPDATE log_entries SET leaf = ? WHERE "index" = 0', (original,))
    assert verify(public).exit_code == 0

    # An expired statement: the same check through the Python API, two days later.
    with OperatorClient(operator.api_url, None, timeout=15) as client:
        verifier = EnclaveVerifier(
            SimulationEvidence(client.simulation),
            EnclavePolicy(None, domain, owner=owner.public_key, allow_simulation=True),
            clock=lambda: datetime.now(UTC) + timedelta(days=2),
            releases=OperatorReleaseLog(
                operator.api_url, CheckpointStore(tmp_path / "api-state"), 15
            ),
            fresh=ChallengeClient(HostPort.parse(router), domain, timeout=15),
        )
        cert = fetch_enclave_certificate(HostPort.parse(router), domain, timeout=15)
        with pytest.raises(ReleaseError) as expired:
            verifier.verify(cert)
    assert expired.value.code == "release.expired"

    # The owner revokes the release.
    revoked = cli(
        "log",
        "revoke",
        context.fingerprint.hex(),
        "--reason",
        "a bug",
        "--key-file",
        str(owner_file),
        "--url",
        operator.api_url,
        "--token",
        token,
    )
    assert revoked.exit_code == 0, revoked.output
    assert error_code(verify(public)) == "release.revoked"

    # An auditor replays the whole log; then the operator rewrites it with its own key.
    audited = cli("log", "audit", "--operator", operator.api_url, "--json")
    assert audited.exit_code == 0, audited.output
    assert json.loads(audited.stdout)["size"] == 3
    with sqlite3.connect(db) as conn:
        leaves = [r[0] for r in conn.execute('SELECT leaf FROM log_entries ORDER BY "index"')]
    rewritten = [leaves[0], unlogged.sign(owner).to_json(), *leaves[1:]]
    rewrite(db, log_key_of(operator.data_dir), rewritten)
    assert error_code(verify(public)) == "log.consistency"
    audit_again = cli("log", "audit", "--operator", operator.api_url)
    assert audit_again.exit_code == 1
    assert "not an extension of the one seen before" in audit_again.stderr
