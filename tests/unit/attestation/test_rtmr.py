"""RTMR3 event log and the TDX policy: a TD is its guest image (MRTD, RTMR0-2) and its launch."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confide.attestation import (
    LAUNCH_EVENT_TYPE,
    TdReference,
    TdxEvent,
    TdxEventLog,
    extend_rtmr,
    launch_rtmr3,
    verify_quote,
)
from confide.errors import FormatError, PolicyError
from confide.tee import SIM_GUEST_IMAGE, SimulatedPlatform, SimulationTdxTee

LAUNCH = hashlib.sha256(b"launch manifest").digest()
OTHER_LAUNCH = hashlib.sha256(b"another launch manifest").digest()
CREATED = datetime(2025, 1, 1, tzinfo=UTC)
NOW = CREATED + timedelta(hours=1)


def test_replay_is_the_tdx_extend_from_zero() -> None:
    # Computed here without the module: SHA-384(0^48 || SHA-384(type || 0x00 || data)).
    digest = hashlib.sha384(LAUNCH_EVENT_TYPE.encode() + b"\x00" + LAUNCH).digest()
    want = hashlib.sha384(bytes(48) + digest).digest()
    assert launch_rtmr3(LAUNCH) == TdxEventLog.for_launch(LAUNCH).replay() == want
    assert extend_rtmr(bytes(48), digest) == want
    assert launch_rtmr3(OTHER_LAUNCH) != want


def test_event_log_round_trips() -> None:
    log = TdxEventLog.for_launch(LAUNCH)
    assert TdxEventLog.from_json(log.to_json()) == log


@given(st.binary(max_size=512))
def test_event_log_parser_answers_with_a_log_or_our_error(raw: bytes) -> None:
    try:
        TdxEventLog.from_json(raw)
    except FormatError:
        pass


def test_a_repeated_key_is_refused() -> None:
    raw = TdxEventLog.for_launch(bytes(32)).to_json()
    with pytest.raises(FormatError, match="duplicate key 'version'") as caught:
        TdxEventLog.from_json(raw.replace(b"{", b'{"version":2,', 1))
    assert caught.value.code == "event_log.format"


def test_a_digest_that_is_not_its_data_is_refused() -> None:
    raw = TdxEventLog.for_launch(LAUNCH).to_json()
    forged = raw.replace(
        TdxEventLog.for_launch(LAUNCH).events[0].digest.hex().encode(),
        TdxEventLog.for_launch(OTHER_LAUNCH).events[0].digest.hex().encode(),
    )
    assert forged != raw
    with pytest.raises(FormatError) as info:
        TdxEventLog.from_json(forged)
    assert info.value.code == "event_log.format"


@pytest.mark.parametrize(
    ("log", "rtmr3", "code"),
    [
        (TdxEventLog.for_launch(OTHER_LAUNCH), launch_rtmr3(OTHER_LAUNCH), "policy.event_log"),
        (
            TdxEventLog(
                (*TdxEventLog.for_launch(LAUNCH).events, TdxEvent(3, "shell", b"curl | sh"))
            ),
            launch_rtmr3(LAUNCH),
            "policy.event_log",
        ),
        (TdxEventLog(()), bytes(48), "policy.event_log"),
        (TdxEventLog.for_launch(LAUNCH), bytes(48), "policy.rtmr3"),
    ],
    ids=["other-launch", "extra-event", "empty", "rtmr3-not-replayed"],
)
def test_check_launch_refuses(log: TdxEventLog, rtmr3: bytes, code: str) -> None:
    with pytest.raises(PolicyError) as info:
        log.check_launch(LAUNCH, rtmr3)
    assert info.value.code == code


def test_check_launch_accepts_the_launch() -> None:
    TdxEventLog.for_launch(LAUNCH).check_launch(LAUNCH, launch_rtmr3(LAUNCH))


# -- the policy on a simulated TD -------------------------------------------------


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.open(tmp_path_factory.mktemp("td") / "state", now=CREATED)


OTHER_IMAGE = dataclasses.replace(SIM_GUEST_IMAGE, mr_td=hashlib.sha384(b"other image").digest())

#: (the TD's image, the TD's launch, the register named, observed, expected).
REJECTIONS = [
    (OTHER_IMAGE, LAUNCH, "policy.mr_td", OTHER_IMAGE.mr_td, SIM_GUEST_IMAGE.mr_td),
    (
        SIM_GUEST_IMAGE,
        OTHER_LAUNCH,
        "policy.rtmr3",
        launch_rtmr3(OTHER_LAUNCH),
        launch_rtmr3(LAUNCH),
    ),
    (
        dataclasses.replace(SIM_GUEST_IMAGE, rtmr1=bytes(48)),
        LAUNCH,
        "policy.rtmr1",
        bytes(48),
        SIM_GUEST_IMAGE.rtmr1,
    ),
]


@pytest.mark.parametrize(
    ("image", "launch", "code", "observed", "expected"),
    REJECTIONS,
    ids=["wrong-mr_td", "wrong-rtmr3", "wrong-rtmr1"],
)
def test_wrong_register_is_rejected_naming_it_with_values(
    platform: SimulatedPlatform,
    image: TdReference,
    launch: bytes,
    code: str,
    observed: bytes,
    expected: bytes,
) -> None:
    assert observed != expected  # not a vacuous row
    quote = SimulationTdxTee(platform, launch, image=image).get_quote(bytes(64))
    with pytest.raises(PolicyError) as info:
        verify_quote(
            quote,
            platform.collateral(NOW, tee="tdx"),
            now=NOW,
            policy=SIM_GUEST_IMAGE.policy(LAUNCH, allow_simulation=True),
            trust_anchor=platform.root_certificate,
        )
    err = info.value
    assert err.code == code
    assert code.removeprefix("policy.").upper().replace("MR_TD", "MRTD") in str(err)
    assert (err.observed, err.expected) == (observed, expected)
    assert observed.hex() in str(err) and expected.hex() in str(err)


def test_the_expected_td_is_accepted(platform: SimulatedPlatform) -> None:
    tee = SimulationTdxTee(platform, LAUNCH)
    result = verify_quote(
        tee.get_quote(bytes(64)),
        platform.collateral(NOW, tee="tdx"),
        now=NOW,
        policy=SIM_GUEST_IMAGE.policy(LAUNCH, allow_simulation=True),
        trust_anchor=platform.root_certificate,
    )
    assert result.rtmrs is not None and result.rtmrs[3] == launch_rtmr3(LAUNCH)
    assert result.mr_td == tee.measurement == SIM_GUEST_IMAGE.mr_td
    tee.event_log.check_launch(LAUNCH, result.rtmrs[3])
    assert [c.name for c in result.checks if c.outcome == "passed"][-5:] == [
        "MRTD",
        "RTMR0",
        "RTMR1",
        "RTMR2",
        "RTMR3",
    ]
