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
import signal
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dcap_qvl
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner, Result

from confide.attestation import (
    Quote,
    TdReference,
    TdReportBody,
    fetch_peer_certificate,
    launch_rtmr3,
    quote_from_certificate,
    verify_ratls_certificate,
)
from confide.cli import app
from confide.client import AppContext, pinned_client
from confide.crypto import PackageKey, encrypt_package
from confide.errors import PolicyError
from confide.runtime import (
    GUEST_PORT,
    CodeSource,
    TdSettings,
    fw_cfg_name,
    launch_manifest,
    start_child,
    stop_child,
)
from confide.tee import SIM_GUEST_IMAGE, SimulatedPlatform
from confide.wire import HostPort
from support.operators import (
    OperatorProcess,
    create_token,
    kill_runtimes,
    wait_gone,
    wait_status,
)
from support.proxy import ZeroTrustApp, proxy_running
from support.runtimes import EXAMPLES, HOST, poll
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
        f"code = {json.dumps(str(EXAMPLES / 'fastapi_hello'))}\n"
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
        assert user.get("/").json() == {"message": "Hello world"}

    # A user's browser goes through confide proxy, pinned to the same published values.
    zero_trust = ZeroTrustApp(
        operator, httpx.Client(), operator.data_dir, domain, str(context.app_id),
        context.fingerprint.hex(),
    )  # fmt: skip
    with proxy_running(tmp_path, zero_trust, "--td-reference", reference) as proxy:
        assert httpx.get(proxy.url + "/", timeout=15).json() == {"message": "Hello world"}
        page = httpx.get(proxy.url + "/.well-known/confide/verification.json", timeout=15)
        assert page.status_code == 200, page.text
        shown = page.json()
        assert shown["enclave"]["quote"]["tee"] == "tdx", shown
        assert shown["expected"]["td_reference"]["mr_td"] == published["mr_td"], shown

    # Without the operator's reference values, the TD is checked against the simulated
    # image's: refused, MRTD named with the TD's value and the expected one.
    unpinned = cli("verify", domain, "--context", str(context_path), *common)
    assert unpinned.exit_code == 1, unpinned.output
    flat = unpinned.output.replace("\n", "")
    assert "MRTD" in flat and body.mr_td.hex() in flat and SIM_GUEST_IMAGE.mr_td.hex() in flat

    # The TD dies: the operator starts a new one on the same port. It is a fresh TD (RTMR3
    # extended once, from zero), with a new key, waiting for its owner (nothing was sealed).
    os.killpg(record["pid"], signal.SIGKILL)
    wait_gone([record["pid"]])

    def restarted() -> bool:
        now = json.loads((folder / "runtime.json").read_text())
        return bool(now["pid"] != record["pid"])

    poll(restarted, "the TD to be restarted", timeout=180)
    with operator.client(token) as api:
        wait_status(api, context.app_id, "initializing", timeout=180)
    assert json.loads((folder / "runtime.json").read_text())["port"] == record["port"]
    again = fetch_peer_certificate(HOST, operator.router_port, server_name=domain, timeout=10)
    assert again.public_key() != cert.public_key()
    body = Quote.from_bytes(quote_from_certificate(again)).body
    assert isinstance(body, TdReportBody)
    assert body.rtmr3 == launch_rtmr3(context.fingerprint)


def test_a_td_launched_without_sept_ve_disable_is_refused_by_both_verifiers(
    image: Path, tmp_path: Path
) -> None:
    """A host that clears SEPT_VE_DISABLE on QEMU's tdx-guest object: the TD boots and its
    guest extends RTMR3 with the launch, but its quote is refused by our verifier, naming
    the attribute, and by dcap-qvl (ADR 0022). QEMU's stand-in run directly, no operator."""
    now = datetime.now(UTC)
    platform = SimulatedPlatform.open(tmp_path / "sim", now=now)
    bin_dir = install(tmp_path / "bin", tmp_path / "sim").bin_dir
    package = tmp_path / "app.pkg"
    with package.open("wb") as f:
        encrypt_package(EXAMPLES / "helloworld", f, PackageKey.generate())
    launch = launch_manifest(
        app_id=uuid.uuid4(),
        application="app:app",
        code=CodeSource.encrypted(package),
        ratls_expiry=int(now.timestamp()) + 3600,
        certificate=None,
        san=("localhost",),
        subject=None,
    )
    (tmp_path / "launch.json").write_bytes(launch.to_json())
    (tmp_path / "settings.json").write_bytes(TdSettings(timeout=120.0).to_json())
    with socket.socket() as probe:  # a port free now, as the backend picks one (bind 0)
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    argv = [
        str(bin_dir / "qemu-system-x86_64"), "-accel", "kvm",
        "-machine", "q35,kernel-irqchip=split,confidential-guest-support=tdx",
        "-object", "tdx-guest,id=tdx,sept-ve-disable=off", "-m", "512M",
        "-bios", str(image / "OVMF.inteltdx.fd"), "-kernel", str(image / "vmlinuz"),
        "-initrd", str(image / "initrd"), "-append", "ro",
        "-netdev", f"user,id=n0,hostfwd=tcp:{HOST}:{port}-:{GUEST_PORT}",
        "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    for item in ("launch", "settings"):
        argv += ["-fw_cfg", f"name={fw_cfg_name(item)},file={tmp_path / f'{item}.json'}"]
    argv += ["-fw_cfg", f"name={fw_cfg_name('package')},file={package}"]
    log = tmp_path / "td.log"
    with log.open("ab") as out:
        td = start_child(argv, env=None, output=out)
    try:
        poll(lambda: "waiting for the configuration" in log.read_text(), "the TD's runtime")
        cert = fetch_peer_certificate(HOST, port, server_name="localhost", timeout=10.0)
    finally:
        stop_child(td, 15.0)
    body = Quote.from_bytes(quote_from_certificate(cert)).body
    assert isinstance(body, TdReportBody)
    assert body.rtmr3 == launch_rtmr3(launch.measurement())  # the guest extended its launch
    assert int.from_bytes(body.td_attributes, "little") == 0
    reference = TdReference.from_json((image / "reference.json").read_bytes())
    with pytest.raises(PolicyError) as info:
        verify_ratls_certificate(
            cert,
            platform.collateral(now, tee="tdx"),
            now=now,
            policy=reference.policy(launch.measurement(), allow_simulation=True),
            trust_anchor=platform.root_certificate,
        )
    assert info.value.code == "policy.td_attributes.sept_ve_disable"
    with pytest.raises(ValueError, match="SEPT_VE_DISABLE"):
        dcap_qvl.verify_with_root_ca(
            quote_from_certificate(cert),
            dcap_qvl.QuoteCollateralV3.from_json(platform.collateral(now, tee="tdx").to_json()),
            platform.root_certificate.public_bytes(Encoding.DER),
            int(now.timestamp()),
        )
