"""`confide attest` and `confide sim`: exit codes, JSON output, one-line errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from confide.attestation import create_ratls_certificate, ratls_report_data
from confide.cli import app
from confide.tee import SimulatedPlatform

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
SGX = VECTORS / "sgx-dcapqvl-00A067110000"
SGX_TIME = "1751623200"
SGX_STATUS = "ConfigurationAndSWHardeningNeeded"
MRENCLAVE = "ab" * 32


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A simulated quote, its collateral and root, made with `confide sim quote`."""
    work = tmp_path_factory.mktemp("sim")
    files = {
        "quote": work / "quote.bin",
        "collateral": work / "collateral.json",
        "root": work / "root.pem",
        "state": work / "platform",
    }
    result = CliRunner().invoke(
        app,
        [
            "sim", "quote", "--state", str(files["state"]),
            "--mrenclave", MRENCLAVE, "--mrsigner", "cd" * 32, "--report-data", "ef" * 64,
            "--out", str(files["quote"]), "--collateral-out", str(files["collateral"]),
            "--root-out", str(files["root"]),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return files


def _json(stdout: str) -> dict[str, object]:
    payload = json.loads(stdout)
    assert isinstance(payload, dict)
    return payload


def test_real_sgx_quote_verifies_with_json_summary(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        [
            "attest", "quote", str(SGX / "quote.bin"), "--collateral", str(SGX / "collateral.json"),
            "--at", SGX_TIME, "--accept-tcb", SGX_STATUS, "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = _json(result.stdout)
    assert payload["verified"] is True
    assert payload["tee"] == "sgx"
    assert payload["quote_version"] == 3
    assert payload["tcb_status"] == SGX_STATUS
    assert payload["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert payload["mrenclave"] == (
        "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    )
    assert payload["simulated"] is False
    assert payload["debug"] is False
    assert payload["error"] is None


def test_human_output_is_a_verdict_and_a_table(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        [
            "attest", "quote", str(SGX / "quote.bin"), "--collateral", str(SGX / "collateral.json"),
            "--at", SGX_TIME, "--accept-tcb", SGX_STATUS,
        ],
    )  # fmt: skip
    assert result.exit_code == 0
    first = result.stdout.splitlines()[0]
    assert first.startswith("VERIFIED SGX quote v3")
    assert "quote signed by the attestation key" in result.stdout
    assert "MRENCLAVE" in result.stdout and "not requested" in result.stdout


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ([], "policy.tcb_status"),
        (["--accept-tcb", SGX_STATUS, "--mrenclave", "00" * 32], "policy.mrenclave"),
        (["--accept-tcb", SGX_STATUS, "--at", "1752919279"], "qe_identity.expired"),
        (["--accept-tcb", SGX_STATUS, "--at", "1750330570"], "tcb_info.not_yet_valid"),
    ],
)
def test_rejections_exit_1_with_the_failed_check(
    runner: CliRunner, extra: list[str], code: str
) -> None:
    args = ["attest", "quote", str(SGX / "quote.bin"), "--collateral", str(SGX / "collateral.json")]
    if "--at" not in extra:
        args += ["--at", SGX_TIME]
    result = runner.invoke(app, [*args, *extra, "--json"])
    assert result.exit_code == 1, result.output
    payload = _json(result.stdout)
    assert payload["verified"] is False
    error = payload["error"]
    assert isinstance(error, dict) and error["code"] == code


def test_rejection_in_human_mode_prints_one_error_line(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        [
            "attest", "quote", str(SGX / "quote.bin"), "--collateral", str(SGX / "collateral.json"),
            "--at", SGX_TIME,
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stdout.startswith("REJECTED policy.tcb_status")
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: TCB status not accepted")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["attest", "quote", "/nonexistent/quote.bin", "--collateral", "x"], "cannot read"),
        (["attest", "quote", str(SGX / "quote.bin")], "exactly one of --collateral"),
        (
            ["attest", "quote", str(SGX / "quote.bin"), "--collateral", str(SGX / "c.json"),
             "--mrenclave", "zz"],
            "--mrenclave is not hex",
        ),
        (
            ["attest", "quote", str(SGX / "quote.bin"), "--collateral",
             str(SGX / "collateral.json"), "--accept-tcb", "Revoked"],
            "not an acceptable status",
        ),
        (["attest", "cert"], "exactly one of FILE or --host"),
        (["attest", "cert", "--host", "nohostport", "--collateral", "x"], "HOST:PORT"),
    ],
)  # fmt: skip
def test_unusable_commands_exit_2_with_one_line(
    runner: CliRunner, args: list[str], fragment: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr
    assert "Traceback" not in result.output


def test_debug_flag_shows_the_traceback(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--debug", "attest", "quote", "/nonexistent", "--collateral", "x"])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


def test_simulated_quote_needs_its_root_and_the_explicit_option(
    runner: CliRunner, sim: dict[str, Path]
) -> None:
    base = ["attest", "quote", str(sim["quote"]), "--collateral", str(sim["collateral"]), "--json"]
    ok = runner.invoke(
        app, [*base, "--root-ca", str(sim["root"]), "--allow-simulation", "--mrenclave", MRENCLAVE]
    )
    assert ok.exit_code == 0, ok.output
    assert _json(ok.stdout)["simulated"] is True

    for extra, code in (
        (["--root-ca", str(sim["root"])], "simulation.not_allowed"),
        ([], "simulation.root"),
        (["--allow-simulation"], "simulation.root"),
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 1, (extra, result.output)
        error = _json(result.stdout)["error"]
        assert isinstance(error, dict) and error["code"] == code, extra


def test_ratls_certificate_file_verifies(
    runner: CliRunner, sim: dict[str, Path], tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    platform = SimulatedPlatform.open(sim["state"], now=now)
    key = ec.generate_private_key(ec.SECP256R1())
    report_data = ratls_report_data(key.public_key(), bytes(32))
    quote = platform.quote(report_data, mr_enclave=bytes.fromhex(MRENCLAVE), mr_signer=bytes(32))
    cert = create_ratls_certificate(
        key,
        quote,
        subject="enclave.test",
        sans=["enclave.test"],
        not_before=now - timedelta(minutes=1),
        not_after=now + timedelta(hours=1),
    )
    pem = tmp_path / "ratls.pem"
    pem.write_bytes(cert.public_bytes(Encoding.PEM))
    collateral = tmp_path / "collateral.json"
    collateral.write_text(platform.collateral(now).to_json())
    base = [
        "attest",
        "cert",
        str(pem),
        "--collateral",
        str(collateral),
        "--root-ca",
        str(sim["root"]),
    ]
    ok = runner.invoke(app, [*base, "--allow-simulation", "--mrenclave", MRENCLAVE, "--json"])
    assert ok.exit_code == 0, ok.output
    assert _json(ok.stdout)["report_data"] == report_data.hex()
    wrong = runner.invoke(app, [*base, "--allow-simulation", "--mrenclave", "00" * 32, "--json"])
    assert wrong.exit_code == 1
