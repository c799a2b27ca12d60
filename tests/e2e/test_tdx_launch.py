"""End to end through the TD launch path (``tee = "tdx"``), with QEMU's stand-in (ADR 0022).

An operator configured with ``tee = "tdx"`` and a ``[tdx]`` table (a firmware, a
guest kernel and initrd, a command line, and the reference values file it
publishes), with ``tests/tdx_standin``'s ``qemu-system-x86_64`` first on its PATH.
Each app is a TD started with QEMU's documented TDX command line; the stand-in
checks it, passes the launch in through fw_cfg and "boots" the guest, whose
runtime extends RTMR3 with the launch through the measurement-register stand-in
and quotes through the configfs-tsm stand-in (the simulated platform signs).

The owner deploys with ``confide deploy --td-reference`` (the operator's published
values), a user verifies with ``confide verify --td-reference`` and calls the app;
without the reference values the TD is refused, naming MRTD with both values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner, Result

from confide.attestation import Quote, TdReportBody, launch_rtmr3, quote_from_certificate
from confide.cli import app
from confide.client import AppContext, pinned_client
from confide.tee import SIM_GUEST_IMAGE
from confide.wire import HostPort
from support.operators import OperatorProcess, create_token, kill_runtimes
from support.runtimes import EXAMPLES, HOST
from tdx_standin import StandinConfig, install, measure_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", name="image")
def image_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A "guest image" (its bytes stand for TDVF, the kernel and the initrd) and the reference
    values its build publishes."""
    folder = tmp_path_factory.mktemp("guest")
    parts = {"OVMF.inteltdx.fd": b"TDVF " * 64, "vmlinuz": b"kernel " * 64, "initrd": b"init"}
    for name, data in parts.items():
        (folder / name).write_bytes(data)
    reference = measure_image(parts["OVMF.inteltdx.fd"], parts["vmlinuz"], parts["initrd"], "ro")
    (folder / "reference.json").write_bytes(reference.to_json())
    return folder


@pytest.fixture(scope="module", name="standins")
def standins_fixture(tmp_path_factory: pytest.TempPathFactory) -> StandinConfig:
    root = tmp_path_factory.mktemp("tdx-launch")
    return install(root / "bin", root / "data" / "simulation")


@pytest.fixture(scope="module", name="operator")
def operator_fixture(standins: StandinConfig, image: Path) -> Iterator[OperatorProcess]:
    data = standins.platform_state.parent
    data.mkdir(mode=0o700, exist_ok=True)
    (data / "operator.toml").write_text(
        'tee = "tdx"\nallow_simulated_tdx = true\n\n[tdx]\n'
        f'firmware = "{image / "OVMF.inteltdx.fd"}"\nkernel = "{image / "vmlinuz"}"\n'
        f'initrd = "{image / "initrd"}"\nappend = "ro"\n'
        f'reference = "{image / "reference.json"}"\n'
    )
    env = dict(os.environ, PATH=f"{standins.bin_dir}{os.pathsep}{os.environ['PATH']}")
    operator = OperatorProcess(data, "--stop-apps-on-exit", env=env)
    try:
        yield operator
    finally:
        operator.kill()
        kill_runtimes(data)


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_deploy_verify_and_call_an_app_in_its_own_td(
    operator: OperatorProcess,
    image: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "user-state"))
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
    reference = str(image / "reference.json")
    done = cli(
        "deploy", "--path", str(project), "--connect", router, "--url", operator.api_url,
        "--token", token, "--timeout", "2", "--allow-simulation", "--td-reference", reference,
        "--key-file", str(tmp_path / "owner.key"),
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    context_path = next((tmp_path / ".confide").glob("*.json"))
    context = AppContext.load(context_path)
    assert context.tee == "tdx"

    # What runs is QEMU's TD command line (the stand-in), its launch passed through fw_cfg.
    folder = operator.data_dir / "apps" / str(context.app_id)
    record = json.loads((folder / "runtime.json").read_text())
    argv = Path(f"/proc/{record['pid']}/cmdline").read_bytes().decode().split("\0")
    assert "q35,kernel-irqchip=split,confidential-guest-support=tdx" in argv
    assert f"name=opt/confide/launch,file={folder / 'launch.json'}" in argv
    assert "runtime" not in argv

    domain = context.domains[0]
    pem = tmp_path / "ratls.pem"
    common = ["--connect", router, "--operator", operator.api_url, "--allow-simulation"]
    verified = cli(
        "verify", domain, "--context", str(context_path), "--td-reference", reference, *common,
        "--output", str(pem),
    )  # fmt: skip
    assert verified.exit_code == 0, verified.output
    assert "VERIFIED SIMULATED TDX" in verified.output

    # The TD reports the published image values and, in RTMR3, what the guest extended.
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    body = Quote.from_bytes(quote_from_certificate(cert)).body
    assert isinstance(body, TdReportBody)
    published = json.loads((image / "reference.json").read_text())
    assert body.mr_td.hex() == published["mr_td"] != SIM_GUEST_IMAGE.mr_td.hex()
    assert [r.hex() for r in body.rtmrs[:3]] == [published[f"rtmr{i}"] for i in range(3)]
    assert body.rtmr3 == launch_rtmr3(context.fingerprint)
    assert int.from_bytes(body.td_attributes, "little") == 1 << 28  # SEPT_VE_DISABLE only

    with pinned_client(HostPort(HOST, operator.router_port), domain, cert, timeout=15) as user:
        assert user.get("/").text == "Hello world"

    # Without the operator's reference values, the TD is checked against the simulated
    # image's: refused, MRTD named with the TD's value and the expected one.
    unpinned = cli("verify", domain, "--context", str(context_path), *common)
    assert unpinned.exit_code == 1, unpinned.output
    flat = unpinned.output.replace("\n", "")
    assert "MRTD" in flat and body.mr_td.hex() in flat and SIM_GUEST_IMAGE.mr_td.hex() in flat
