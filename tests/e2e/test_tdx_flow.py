"""End to end on simulated TDX: deploy, verify and call an app from the CLI (ADR 0020).

One ``confide operator serve`` with ``tee = "simulation-tdx"`` (one simulated TD
per app); the owner deploys with ``confide deploy``, a user verifies with
``confide verify`` (MRTD and RTMR0-2 of the simulated guest image, RTMR3 of the
launch) and calls the app over the verified, pinned certificate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner, Result

from confide.attestation import (
    Quote,
    TdReportBody,
    fetch_peer_certificate,
    launch_rtmr3,
    quote_from_certificate,
    verify_ratls_certificate,
)
from confide.cli import app
from confide.client import AppContext, pinned_client
from confide.tee import SIM_GUEST_IMAGE, SimulatedPlatform
from confide.wire import HostPort
from support.operators import OperatorProcess, app_body, create_token, operator_running
from support.runtimes import (
    EXAMPLES,
    HOST,
    CodeUnderTest,
    Launch,
    client,
    new_platform,
    running,
    trusting,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", name="operator")
def operator_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    data = tmp_path_factory.mktemp("tdx") / "data"
    data.mkdir(mode=0o700)
    (data / "operator.toml").write_text('tee = "simulation-tdx"\n')
    with operator_running(data) as operator:
        yield operator


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_deploy_verify_and_call_on_simulated_tdx(operator: OperatorProcess, tmp_path: Path) -> None:
    token = create_token(operator.data_dir, "owner")
    (tmp_path / "tests").mkdir()
    project = tmp_path / "confide.toml"
    project.write_text(
        'name = "hello"\npython_application = "app:app"\nhealthcheck_endpoint = "/"\n'
        'tests_cmd = "pytest"\ntests_requirements = []\n\n[cloud]\n'
        f"code = {json.dumps(str(EXAMPLES / 'helloworld'))}\n"
        'tests = "tests"\nproject = "default"\nhardware = "small"\n'
    )
    router = f"{HOST}:{operator.router_port}"
    done = cli(
        "deploy", "--path", str(project), "--connect", router, "--url", operator.api_url,
        "--token", token, "--timeout", "1", "--allow-simulation",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    context_path = next((tmp_path / ".confide").glob("*.json"))
    context = AppContext.load(context_path)
    assert context.tee == "simulation-tdx"
    with operator.client(token) as api:
        assert app_body(api, context.app_id)["status"] == "running"

    domain = context.domains[0]
    pem = tmp_path / "ratls.pem"
    common = ["--connect", router, "--operator", operator.api_url, "--allow-simulation"]
    verified = cli("verify", domain, "--context", str(context_path), *common, "--output", str(pem))
    assert verified.exit_code == 0, verified.output
    assert "VERIFIED SIMULATED TDX" in verified.output

    # The TD reports the simulated guest image and, in RTMR3, this launch.
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    body = Quote.from_bytes(quote_from_certificate(cert)).body
    assert isinstance(body, TdReportBody)
    assert body.mr_td == SIM_GUEST_IMAGE.mr_td
    assert body.rtmr3 == launch_rtmr3(context.fingerprint)

    with pinned_client(HostPort(HOST, operator.router_port), domain, cert, timeout=15) as user:
        assert user.get("/").text == "Hello world"

    # Another expected launch: RTMR3 is named with its observed and expected values.
    wrong = cli("verify", domain, "--fingerprint", "00" * 32, *common)
    assert wrong.exit_code == 1, wrong.output
    assert "RTMR3" in wrong.output
    assert launch_rtmr3(bytes(32)).hex() in wrong.output.replace("\n", "")


def _tdx_args(launch: Launch) -> list[str]:
    args = launch.args()
    args[args.index("--tee") + 1] = "simulation-tdx"
    return args


def _verify_td(port: int, platform: SimulatedPlatform, launch: Launch) -> x509.Certificate:
    cert = fetch_peer_certificate(HOST, port, server_name="localhost", timeout=10.0)
    now = datetime.now(UTC)
    verify_ratls_certificate(
        cert,
        platform.collateral(now, tee="tdx"),
        now=now,
        policy=SIM_GUEST_IMAGE.policy(launch.measurement(), allow_simulation=True),
        trust_anchor=platform.root_certificate,
    )
    return cert


def test_a_restarted_td_waits_for_its_owner_again(tmp_path: Path) -> None:
    platform = new_platform(tmp_path / "sim")
    code = CodeUnderTest.package(EXAMPLES / "helloworld", tmp_path / "app.pkg")
    assert code.key is not None
    launch = Launch(code, tmp_path / "state", tmp_path / "sim")
    configuration = {"uuid": str(launch.app_id), "code_secret_key": code.key.hex()}
    keys = []
    for run in range(2):
        with running(_tdx_args(launch)) as runtime:
            port = runtime.port()  # waiting for the configuration, on each start
            cert = _verify_td(port, platform, launch)
            keys.append(cert.public_key())
            with client(port, trusting(cert)) as owner:
                response = owner.post("/", json=configuration)
                assert response.status_code == 200, response.text
            runtime.wait_for("serving app:app on https://")
            assert runtime.terminate() == 0
        assert "resuming the app" not in runtime.text, run
        # Nothing was sealed to disk: a TD has no sealing key (ADR 0020).
        assert not launch.state_dir.exists() or list(launch.state_dir.iterdir()) == []
    assert keys[0] != keys[1]  # a new RA-TLS key after the restart
