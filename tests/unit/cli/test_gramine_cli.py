"""`confide gramine manifest|lint` and `confide fingerprint --tee gramine`.

Gramine is not installed here: the prediction is tested (a) without its tools, where it
must say exactly which are missing, in one line, with exit code 2, and (b) with two small
stand-ins written by the test that sign as the simulated TEE does, to prove the command
runs the tools on the manifest it renders and reads mr_enclave back.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from confide.cli import app
from confide.cli._gramine import render_manifest
from confide.gramine import runtime_environment, simulated_mrenclave
from confide.runtime import CodeSource, launch_manifest
from confide.wire import LaunchManifest
from support.wheels import lock_of, wheel_bytes

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "helloworld"
APP_ID = "0f0f0f0f-0000-4000-8000-000000000002"
LAUNCH_OPTIONS = (
    "--app-id", APP_ID, "--application", "app:app", "--app-dir", str(EXAMPLE), "--plaincode",
    "--ratls", "1900000000", "--san", "a.example",
)  # fmt: skip

SIGN = """#!{python}
import sys
from pathlib import Path
from confide.gramine import simulated_mrenclave
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
text = Path(args["--manifest"]).read_text()
Path(args["--output"]).write_text(text)
assert Path(args["--key"]).is_file()
Path(args["--output"].removesuffix(".manifest.sgx") + ".sig").write_text(
    simulated_mrenclave(text).hex())
"""
VIEW = """#!{python}
import sys
from pathlib import Path
print("Attributes:")
print("    mr_signer: " + "00" * 32)
print("    mr_enclave: " + Path(sys.argv[1]).read_text())
"""


def _tool(folder: Path, name: str, source: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(source.format(python=sys.executable))
    path.chmod(0o755)


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _launch() -> LaunchManifest:
    return launch_manifest(
        app_id=uuid.UUID(APP_ID), application="app:app",
        code=CodeSource.plaintext_folder(EXAMPLE), ratls_expiry=1900000000,
        certificate=None, san=("a.example",), subject=None,
    )  # fmt: skip


MISSING = {
    "no Gramine": ((), "gramine-sgx-sign and gramine-sgx-sigstruct-view are not on PATH"),
    "no viewer": (("gramine-sgx-sign",), "gramine-sgx-sigstruct-view is not on PATH"),
    "no signer": (("gramine-sgx-sigstruct-view",), "gramine-sgx-sign is not on PATH"),
}


@pytest.mark.parametrize(("present", "message"), MISSING.values(), ids=MISSING.keys())
def test_without_gramine_it_says_exactly_what_is_missing(
    present: tuple[str, ...], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in present:
        _tool(tmp_path / "bin", name, SIGN if name.endswith("sign") else VIEW)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    code, out, err = _run("fingerprint", *LAUNCH_OPTIONS, "--tee", "gramine")
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_with_gramine_tools_it_predicts_mrenclave_of_the_rendered_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tool(tmp_path / "bin", "gramine-sgx-sign", SIGN)
    _tool(tmp_path / "bin", "gramine-sgx-sigstruct-view", VIEW)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    code, out, err = _run("fingerprint", *LAUNCH_OPTIONS, "--tee", "gramine", "--json")
    assert code == 0, err
    payload = json.loads(out)
    text = render_manifest(_launch(), runtime_environment(), enclave_size="2G", max_threads=64)
    assert payload["tee"] == "gramine"
    assert payload["fingerprint"] == simulated_mrenclave(text).hex()
    # Another enclave size is another manifest, so another MRENCLAVE; the simulated one
    # ignores it. The port is not an input any more: the host passes it in, unmeasured.
    code, other, _ = _run(
        "fingerprint", *LAUNCH_OPTIONS, "--tee", "gramine", "--enclave-size", "4G"
    )
    assert code == 0 and other.strip() != payload["fingerprint"]
    code, _, err = _run("fingerprint", *LAUNCH_OPTIONS, "--tee", "gramine", "--port", "9443")
    assert code == 2 and "--port" in err
    code, simulated, _ = _run("fingerprint", *LAUNCH_OPTIONS)
    assert code == 0 and simulated.strip() == _launch().measurement().hex()


def _launch_file(tmp_path: Path) -> Path:
    code, out, err = _run("fingerprint", *LAUNCH_OPTIONS, "--json")
    assert code == 0, err
    path = tmp_path / "launch.json"
    path.write_text(out)
    return path


def test_gramine_manifest_renders_a_manifest_that_lints(tmp_path: Path) -> None:
    target = tmp_path / "app.manifest"
    code, _, err = _run(
        "gramine", "manifest", "--manifest", str(_launch_file(tmp_path)), "--output", str(target)
    )
    assert code == 0, err
    text = target.read_text()
    assert 'sgx.remote_attestation = "dcap"' in text and "sgx.debug = false" in text
    assert text == render_manifest(
        _launch(), runtime_environment(), enclave_size="2G", max_threads=64
    )
    code, out, err = _run("gramine", "lint", str(target))
    assert code == 0, err
    assert out.startswith("OK ") and "all trusted" in out


def test_gramine_manifest_renders_a_locked_launch_with_its_lock_and_refuses_another(
    tmp_path: Path,
) -> None:
    """``--requirements`` (what a Gramine pod passes, ADR 0030): the lock and its wheels are
    trusted files with the lock's hashes; a lock the launch does not measure is refused."""
    lock = lock_of(("tinydep", "1.0", wheel_bytes("tinydep", "1.0")))
    locked = dataclasses.replace(_launch(), requirements_sha256=lock.digest())
    launch = tmp_path / "launch.json"
    launch.write_bytes(locked.to_json())
    (tmp_path / "requirements.lock").write_bytes(lock.to_bytes())
    target = tmp_path / "app.manifest"
    base = ("gramine", "manifest", "--manifest", str(launch), "--output", str(target))
    code, _, err = _run(*base, "--requirements", str(tmp_path / "requirements.lock"))
    assert code == 0, err
    assert target.read_text() == render_manifest(
        locked, runtime_environment(), enclave_size="2G", max_threads=64, lock=lock
    )
    assert f'sha256 = "{lock.requirements[0].sha256.hex()}"' in target.read_text()
    other = lock_of(("tinydep", "2.0", wheel_bytes("tinydep", "2.0")))
    (tmp_path / "other.lock").write_bytes(other.to_bytes())
    for wrong in (("--requirements", str(tmp_path / "other.lock")), ()):
        code, _, err = _run(*base, *wrong)
        assert code != 0 and len(err.strip().splitlines()) == 1, err
        assert "requirements lock" in err


def test_gramine_manifest_refuses_a_launch_file_with_a_repeated_key(tmp_path: Path) -> None:
    path = _launch_file(tmp_path)
    path.write_text(path.read_text().replace("{", '{"manifest": {},', 1))
    code, _, err = _run("gramine", "manifest", "--manifest", str(path))
    assert code != 0
    assert "duplicate key 'manifest'" in err and len(err.strip().splitlines()) == 1


LINT_SEEDS = {
    "debug": (("sgx.debug = false", "sgx.debug = true"), "sgx.debug: observed true"),
    "untrusted h11": (("/h11/", None), "is not trusted"),
}


@pytest.mark.parametrize(("seed", "message"), LINT_SEEDS.values(), ids=LINT_SEEDS.keys())
def test_gramine_lint_refuses_in_one_line_with_exit_1(
    seed: tuple[str, str | None], message: str, tmp_path: Path
) -> None:
    target = tmp_path / "app.manifest"
    code, _, _ = _run(
        "gramine", "manifest", "--manifest", str(_launch_file(tmp_path)), "--output", str(target)
    )
    text = target.read_text()
    old, new = seed
    seeded = (
        text.replace(old, new)
        if new is not None
        else "\n".join(line for line in text.splitlines() if old not in line)
    )
    assert seeded != text
    target.write_text(seeded)
    code, out, err = _run("gramine", "lint", str(target))
    assert code == 1 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
