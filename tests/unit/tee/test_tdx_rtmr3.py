"""TdxTee extends RTMR3 with the launch from the guest, through the TDX measurement registers.

The registers are :mod:`support.tdx_measurements` (the kernel's documented ABI);
quotes come from the configfs-tsm stand-in, their RTMR3 what the guest extended.
A quote after :meth:`TdxTee.extend_launch` verifies against the image's reference
values and this launch; each way the extension can go wrong is a typed error.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from confide.attestation import TdReference, TdxEventLog, launch_rtmr3, verify_quote
from confide.errors import PolicyError, TsmError, UsageError
from confide.tee import RTMR3_FILE, SimulatedPlatform, TdxTee, select_tee
from support.configfs_tsm import ConfigfsTsm
from support.tdx_measurements import TdxMeasurements

CREATED = datetime(2025, 1, 1, tzinfo=UTC)
NOW = CREATED + timedelta(hours=1)
TSM = Path("/sys/kernel/config/tsm/report")
MRS = Path("/sys/class/misc/tdx_guest/measurements")
IMAGE = TdReference(*(hashlib.sha384(n.encode()).digest() for n in ("mrtd", "r0", "r1", "r2")))
LAUNCH = hashlib.sha256(b"launch manifest").digest()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.open(tmp_path_factory.mktemp("rtmr3") / "state", now=CREATED)


@pytest.fixture(name="registers")
def registers_fixture() -> TdxMeasurements:
    return TdxMeasurements(
        MRS, mr_td=IMAGE.mr_td, rtmrs=(IMAGE.rtmr0, IMAGE.rtmr1, IMAGE.rtmr2, bytes(48))
    )


def guest(platform: SimulatedPlatform, registers: TdxMeasurements) -> TdxTee:
    def quote(report_data: bytes) -> bytes:
        rtmrs = (IMAGE.rtmr0, IMAGE.rtmr1, IMAGE.rtmr2, registers.rtmr(3))
        return platform.td_quote(report_data, mr_td=IMAGE.mr_td, rtmrs=rtmrs)

    return TdxTee(TSM, filesystem=ConfigfsTsm(TSM, quote), measurements=MRS, registers=registers)


def test_the_extended_launch_verifies_against_the_image_and_the_launch(
    platform: SimulatedPlatform, registers: TdxMeasurements
) -> None:
    tee = guest(platform, registers)
    assert tee.event_log is None
    log = tee.extend_launch(LAUNCH)
    assert log == tee.event_log == TdxEventLog.for_launch(LAUNCH)
    assert registers.extends == [(3, log.events[0].digest)]  # one 48-byte write
    assert registers.rtmr(3) == launch_rtmr3(LAUNCH)
    verified = verify_quote(
        tee.get_quote(bytes(64)),
        platform.collateral(NOW, tee="tdx"),
        now=NOW,
        policy=IMAGE.policy(LAUNCH, allow_simulation=True),
        trust_anchor=platform.root_certificate,
    )
    assert verified.rtmrs is not None and verified.rtmrs[3] == launch_rtmr3(LAUNCH)


def test_a_quote_before_the_extension_is_not_this_launch(
    platform: SimulatedPlatform, registers: TdxMeasurements
) -> None:
    # Why the runtime extends before its first quote: RTMR3 zero matches no launch.
    with pytest.raises(PolicyError) as info:
        verify_quote(
            guest(platform, registers).get_quote(bytes(64)),
            platform.collateral(NOW, tee="tdx"),
            now=NOW,
            policy=IMAGE.policy(LAUNCH, allow_simulation=True),
            trust_anchor=platform.root_certificate,
        )
    assert info.value.code == "policy.rtmr3"


def test_a_second_launch_in_the_same_td_is_refused(
    platform: SimulatedPlatform, registers: TdxMeasurements
) -> None:
    guest(platform, registers).extend_launch(LAUNCH)
    with pytest.raises(TsmError) as info:
        guest(platform, registers).extend_launch(LAUNCH)  # a new runtime, the same TD
    assert info.value.code == "tdx.rtmr3_not_fresh"
    assert info.value.observed == launch_rtmr3(LAUNCH).hex()
    assert info.value.expected == bytes(48).hex()
    assert len(registers.extends) == 1  # nothing more was extended


def test_extending_twice_with_one_tee_is_refused(
    platform: SimulatedPlatform, registers: TdxMeasurements
) -> None:
    tee = guest(platform, registers)
    tee.extend_launch(LAUNCH)
    with pytest.raises(TsmError) as info:
        tee.extend_launch(LAUNCH)
    assert info.value.code == "tdx.rtmr3_not_fresh"


class _ConcurrentExtender(TdxMeasurements):
    """Another process extends RTMR3 right after our write."""

    def write(self, path: Path, data: bytes) -> None:
        super().write(path, data)
        super().write(path, hashlib.sha384(b"intruder").digest())


def test_another_writer_between_the_write_and_the_read_back_is_detected(
    platform: SimulatedPlatform,
) -> None:
    registers = _ConcurrentExtender(MRS, mr_td=IMAGE.mr_td)
    with pytest.raises(TsmError) as info:
        guest(platform, registers).extend_launch(LAUNCH)
    assert info.value.code == "tdx.rtmr3_extend"
    assert info.value.expected == launch_rtmr3(LAUNCH).hex()
    assert info.value.observed == registers.rtmr(3).hex()


def test_a_kernel_without_measurement_registers_is_refused(platform: SimulatedPlatform) -> None:
    registers = TdxMeasurements(Path("/elsewhere"), mr_td=IMAGE.mr_td)
    with pytest.raises(TsmError) as info:
        guest(platform, registers).extend_launch(LAUNCH)
    assert info.value.code == "tdx.measurements"
    assert "6.16" in str(info.value)


def test_the_register_file_is_the_kernels_name() -> None:
    assert RTMR3_FILE == "rtmr3:sha384"


def test_select_tee_needs_the_launch_to_extend(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        select_tee("tdx", simulation_state=None, measurement=None)
    # With a measurement, on a machine that is no TD, configfs-tsm is absent.
    with pytest.raises(TsmError) as info:
        select_tee("tdx", simulation_state=None, measurement=LAUNCH, tsm_root=tmp_path / "no-tsm")
    assert info.value.code == "tsm.absent"
