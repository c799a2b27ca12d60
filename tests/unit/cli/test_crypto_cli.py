"""``confide package``, ``confide seal`` and ``confide unseal`` through the command line."""

from __future__ import annotations

import json
import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from nacl.public import PrivateKey, SealedBox
from typer.testing import CliRunner

import confide.cli._crypto  # noqa: F401  (registers the commands on the app)
from confide.attestation import create_ratls_certificate, ratls_report_data
from confide.cli import app
from confide.crypto import PackageKey, X25519KeyPair, package_digest, seal, unseal
from confide.tee import SimulatedPlatform
from confide.wire import LAUNCH_MANIFEST_OID, LaunchManifest, TlsMode


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "pkg").mkdir(parents=True)
    (root / "main.py").write_text("print('hello')\n")
    (root / "pkg" / "mod.py").write_text("X = 1\n")
    (root / "secret.env").write_text("TOKEN=1\n")
    (root / ".confideignore").write_text("secret.env\n")
    return root


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_encrypt_with_a_new_key_then_decrypt(
    runner: CliRunner, app_dir: Path, tmp_path: Path
) -> None:
    pkg, key_file = tmp_path / "app.pkg", tmp_path / "app.key"
    result = runner.invoke(
        app, ["package", "encrypt", str(app_dir), "--out", str(pkg), "--key-out", str(key_file)]
    )
    assert result.exit_code == 0, result.output
    key = PackageKey.from_file_bytes(key_file.read_bytes())
    assert _mode(key_file) == 0o600
    assert result.stdout.strip() == f"sha256 {package_digest(pkg).hex()}"
    assert key.hex() not in result.output

    out = tmp_path / "copy"
    result = runner.invoke(
        app, ["package", "decrypt", str(pkg), "--key-file", str(key_file), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "main.py").read_text() == "print('hello')\n"
    assert (out / "pkg" / "mod.py").read_text() == "X = 1\n"
    assert not (out / "secret.env").exists()
    assert not (out / ".confideignore").exists()

    digest = runner.invoke(app, ["package", "digest", str(pkg)])
    assert digest.stdout.strip() == package_digest(pkg).hex()


def test_encrypt_with_a_key_file_json_and_show_key(
    runner: CliRunner, app_dir: Path, tmp_path: Path
) -> None:
    key = PackageKey.generate()
    key_file = tmp_path / "k"
    key_file.write_text(key.hex())
    pkg = tmp_path / "app.pkg"
    args = ["package", "encrypt", str(app_dir), "--out", str(pkg), "--key-file", str(key_file)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["sha256"] == package_digest(pkg).hex()
    assert payload["files"] == 2 and payload["directories"] == 1
    assert "key" not in payload
    result = runner.invoke(app, [*args, "--force", "--show-key"])
    assert result.exit_code == 0, result.output
    assert f"key    {key.hex()}" in result.stdout


def test_key_from_the_environment(runner: CliRunner, app_dir: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    key_file.write_bytes(PackageKey.generate().secret)  # raw, as cenclave keygen writes it
    pkg = tmp_path / "app.pkg"
    env = {"CONFIDE_PACKAGE_KEY_FILE": str(key_file)}
    result = runner.invoke(app, ["package", "encrypt", str(app_dir), "--out", str(pkg)], env=env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["package", "decrypt", str(pkg), "--out", str(tmp_path / "o")], env=env
    )
    assert result.exit_code == 0, result.output


def _package(runner: CliRunner, app_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    pkg, key_file = tmp_path / "app.pkg", tmp_path / "app.key"
    result = runner.invoke(
        app, ["package", "encrypt", str(app_dir), "--out", str(pkg), "--key-out", str(key_file)]
    )
    assert result.exit_code == 0, result.output
    return pkg, key_file


def test_rejected_packages_exit_1(runner: CliRunner, app_dir: Path, tmp_path: Path) -> None:
    pkg, key_file = _package(runner, app_dir, tmp_path)
    wrong = tmp_path / "wrong.key"
    wrong.write_text(PackageKey.generate().hex())
    data = pkg.read_bytes()
    cases = {
        "wrong": (pkg, wrong, "key check"),
        "truncated": (tmp_path / "t.pkg", key_file, "truncated"),
        "altered": (tmp_path / "a.pkg", key_file, "does not authenticate"),
    }
    (tmp_path / "t.pkg").write_bytes(data[:-30])
    (tmp_path / "a.pkg").write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    for name, (path, key, message) in cases.items():
        out = tmp_path / f"out-{name}"
        result = runner.invoke(
            app, ["package", "decrypt", str(path), "--key-file", str(key), "--out", str(out)]
        )
        assert result.exit_code == 1, (name, result.output)
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["package", "encrypt", "{app}", "--out", "{tmp}/p"], "exactly one of --key-file"),
        (
            [
                "package",
                "encrypt",
                "{app}",
                "--out",
                "{tmp}/p",
                "--key-out",
                "{tmp}/k",
                "--key-file",
                "{tmp}/k",
            ],
            "exactly one of --key-file",
        ),
        (
            ["package", "encrypt", "{tmp}/nope", "--out", "{tmp}/p", "--key-out", "{tmp}/k"],
            "not a directory",
        ),
        (
            ["package", "encrypt", "{app}", "--out", "{tmp}/p", "--key-file", "{tmp}/nope"],
            "cannot read",
        ),
        (
            ["package", "decrypt", "{tmp}/nope", "--key-file", "{tmp}/key", "--out", "{tmp}/o"],
            "cannot read the package",
        ),
        (["package", "decrypt", "{tmp}/p0", "--out", "{tmp}/o"], "--key-file"),
        (["seal", "{tmp}/key", "--out", "{tmp}/s"], "exactly one of --public-key"),
        (["seal", "{tmp}/key", "--out", "{tmp}/s", "--public-key", "zz"], "not hex"),
        (["seal", "{tmp}/key", "--out", "{tmp}/s", "--public-key", "abcd"], "32 bytes"),
        (
            ["unseal", "{tmp}/key", "--out", "{tmp}/s", "--private-key-file", "{tmp}/nope"],
            "cannot read",
        ),
    ],
)
def test_usage_errors_exit_2(
    runner: CliRunner, app_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "key").write_text(PackageKey.generate().hex())
    (tmp_path / "p0").write_bytes(b"x")
    argv = [a.format(app=app_dir, tmp=tmp_path) for a in args]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_outputs_are_never_clobbered(runner: CliRunner, app_dir: Path, tmp_path: Path) -> None:
    pkg, key_file = _package(runner, app_dir, tmp_path)
    before = key_file.read_bytes()
    result = runner.invoke(
        app,
        [
            "package",
            "encrypt",
            str(app_dir),
            "--out",
            str(tmp_path / "n.pkg"),
            "--key-out",
            str(key_file),
        ],
    )
    assert result.exit_code == 2
    assert "never replaced" in result.stderr
    assert key_file.read_bytes() == before
    assert not (tmp_path / "n.pkg").exists()
    result = runner.invoke(
        app, ["package", "encrypt", str(app_dir), "--out", str(pkg), "--key-file", str(key_file)]
    )
    assert result.exit_code == 2
    assert "--force" in result.stderr
    out = tmp_path / "exists"
    out.mkdir()
    result = runner.invoke(
        app, ["package", "decrypt", str(pkg), "--key-file", str(key_file), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "already exists" in result.stderr


def test_seal_and_unseal(runner: CliRunner, tmp_path: Path) -> None:
    pair = X25519KeyPair.generate()
    secret = tmp_path / "secret.json"
    secret.write_bytes(b'{"db": "hunter2"}')
    sealed = tmp_path / "secret.sealed"
    result = runner.invoke(
        app, ["seal", str(secret), "--public-key", pair.public_key.hex(), "--out", str(sealed)]
    )
    assert result.exit_code == 0, result.output
    assert (
        SealedBox(PrivateKey(pair.private_key)).decrypt(sealed.read_bytes()) == secret.read_bytes()
    )

    key_file = tmp_path / "enclave.key"
    key_file.write_bytes(pair.public_key + pair.private_key)  # cenclave keygen's layout
    opened = tmp_path / "opened.json"
    result = runner.invoke(
        app,
        ["unseal", str(sealed), "--private-key-file", str(key_file), "--out", str(opened)],
    )
    assert result.exit_code == 0, result.output
    assert opened.read_bytes() == secret.read_bytes()
    assert _mode(opened) == 0o600
    assert "hunter2" not in result.output


def test_unseal_with_the_wrong_key_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    sealed = tmp_path / "s"
    sealed.write_bytes(seal(b"x", X25519KeyPair.generate().public_key))
    key_file = tmp_path / "k"
    key_file.write_text(X25519KeyPair.generate().private_key.hex())
    result = runner.invoke(
        app,
        ["unseal", str(sealed), "--private-key-file", str(key_file), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 1
    assert "does not open" in result.stderr
    assert not (tmp_path / "o").exists()


def test_seal_to_a_verified_ratls_certificate(runner: CliRunner, tmp_path: Path) -> None:
    now = datetime(2025, 6, 1, tzinfo=UTC)
    platform = SimulatedPlatform.open(tmp_path / "sim", now=now)
    enclave = X25519KeyPair.generate()
    tls_key = ec.generate_private_key(ec.SECP256R1())
    quote = platform.quote(
        ratls_report_data(tls_key.public_key(), enclave.public_key),
        mr_enclave=bytes(range(32)),
        mr_signer=bytes(32),
    )
    cert = create_ratls_certificate(
        tls_key,
        quote,
        subject="enclave",
        sans=["localhost"],
        not_before=now - timedelta(hours=1),
        not_after=now + timedelta(days=1),
    )
    (tmp_path / "ratls.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    (tmp_path / "root.pem").write_bytes(platform.root_certificate.public_bytes(Encoding.PEM))
    (tmp_path / "coll.json").write_text(platform.collateral(now).to_json())
    (tmp_path / "secret").write_bytes(b"api-key")
    base = [
        "seal",
        str(tmp_path / "secret"),
        "--cert",
        str(tmp_path / "ratls.pem"),
        "--collateral",
        str(tmp_path / "coll.json"),
        "--root-ca",
        str(tmp_path / "root.pem"),
        "--at",
        str(int(now.timestamp())),
        "--mrenclave",
        bytes(range(32)).hex(),
    ]
    sealed = tmp_path / "sealed"
    result = runner.invoke(app, [*base, "--allow-simulation", "--out", str(sealed)])
    assert result.exit_code == 0, result.output
    assert unseal(sealed.read_bytes(), enclave) == b"api-key"

    # Not verified (simulation not allowed, or another enclave expected): nothing is sealed.
    refused = tmp_path / "refused"
    for extra, reason in (
        ([], "simulat"),
        (["--allow-simulation", "--mrenclave", "00" * 32], "MRENCLAVE"),
    ):
        result = runner.invoke(app, [*base, *extra, "--out", str(refused)])
        assert result.exit_code == 1, result.output
        assert reason in result.stderr, result.stderr
        assert not refused.exists()


def test_debug_shows_the_traceback_of_a_rejection(
    runner: CliRunner, app_dir: Path, tmp_path: Path
) -> None:
    pkg, _ = _package(runner, app_dir, tmp_path)
    wrong = tmp_path / "wrong.key"
    wrong.write_text(PackageKey.generate().hex())
    argv = ["package", "decrypt", str(pkg), "--key-file", str(wrong), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, ["--debug", *argv])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert "Traceback" not in runner.invoke(app, argv).stderr


def test_seal_to_an_unpinned_enclave_needs_a_pin_or_the_unsafe_flag(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Issue 9, point 4: --cert alone sealed to any genuine enclave without a word."""
    now = datetime(2025, 6, 1, tzinfo=UTC)
    platform = SimulatedPlatform.open(tmp_path / "sim", now=now)
    enclave = X25519KeyPair.generate()
    tls_key = ec.generate_private_key(ec.SECP256R1())
    launch = LaunchManifest(
        runtime_sha256=bytes(32),
        package_sha256=bytes(32),
        app_id=uuid.UUID(int=9),
        application="app:app",
        tls=TlsMode.RATLS,
        ratls_expiry=int((now + timedelta(days=1)).timestamp()),
        certificate_sha256=None,
        san=("b.apps.example",),
        subject=None,
    )
    quote = platform.quote(
        ratls_report_data(tls_key.public_key(), enclave.public_key),
        mr_enclave=launch.measurement(),
        mr_signer=bytes(32),
    )
    cert = create_ratls_certificate(
        tls_key,
        quote,
        subject="enclave",
        sans=["b.apps.example"],
        not_before=now - timedelta(hours=1),
        not_after=now + timedelta(days=1),
        extensions=[x509.UnrecognizedExtension(LAUNCH_MANIFEST_OID, launch.to_json())],
    )
    (tmp_path / "ratls.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    (tmp_path / "root.pem").write_bytes(platform.root_certificate.public_bytes(Encoding.PEM))
    (tmp_path / "coll.json").write_text(platform.collateral(now).to_json())
    (tmp_path / "secret").write_bytes(b"api-key")
    base = ["seal", str(tmp_path / "secret"), "--cert", str(tmp_path / "ratls.pem")]
    base += ["--collateral", str(tmp_path / "coll.json"), "--root-ca", str(tmp_path / "root.pem")]
    base += ["--at", str(int(now.timestamp())), "--allow-simulation"]
    out = tmp_path / "sealed"

    unpinned = runner.invoke(app, [*base, "--out", str(out)])
    assert unpinned.exit_code == 2, unpinned.output
    assert "--unsafe-any-enclave" in unpinned.stderr and not out.exists()

    other = runner.invoke(app, [*base, "--name", "a.apps.example", "--out", str(out)])
    assert other.exit_code == 1, other.output
    assert "not launched for a.apps.example" in other.stderr and not out.exists()

    named = runner.invoke(app, [*base, "--name", "b.apps.example", "--out", str(out)])
    assert named.exit_code == 0, named.output
    assert unseal(out.read_bytes(), enclave) == b"api-key"
    out.unlink()

    unsafe = runner.invoke(app, [*base, "--unsafe-any-enclave", "--out", str(out)])
    assert unsafe.exit_code == 0, unsafe.output
    assert "neither its code nor its launch was checked" in unsafe.stderr
    assert unseal(out.read_bytes(), enclave) == b"api-key"
