"""TdxTee over configfs-tsm, and the configfs-tsm stand-in against the kernel's documented ABI."""

from __future__ import annotations

import errno
import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from confide.attestation import Policy, Quote, verify_quote
from confide.errors import TeeError, TsmError
from confide.tee import SimulatedPlatform, TdxTee, Tee, TeeKind
from support.configfs_tsm import ConfigfsTsm

CREATED = datetime(2025, 1, 1, tzinfo=UTC)
MR_TD = hashlib.sha384(b"confide guest image").digest()
MR_ENCLAVE = hashlib.sha256(b"enclave").digest()
REPORT_DATA = bytes(range(64))
ROOT = Path("/sys/kernel/config/tsm/report")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.open(tmp_path_factory.mktemp("tdx") / "state", now=CREATED)


@pytest.fixture
def td_quote(platform: SimulatedPlatform) -> Callable[[bytes], bytes]:
    def make(report_data: bytes) -> bytes:
        return platform.td_quote(report_data, mr_td=MR_TD)

    return make


@pytest.fixture
def tsm(td_quote: Callable[[bytes], bytes]) -> ConfigfsTsm:
    return ConfigfsTsm(ROOT, td_quote)


# -- the stand-in behaves as the kernel documents ------------------------------


def test_stand_in_generation_counts_inblob_writes_and_outblob_follows_inblob(
    tsm: ConfigfsTsm,
) -> None:
    entry = ROOT / "e"
    tsm.mkdir(entry)
    assert tsm.read(entry / "provider", 64) == b"tdx_guest\n"
    assert tsm.read(entry / "generation", 64) == b"0\n"
    for n, data in enumerate((bytes(64), REPORT_DATA, bytes(64)), start=1):
        tsm.write(entry / "inblob", data)
        assert tsm.read(entry / "generation", 64) == f"{n}\n".encode()
        assert Quote.from_bytes(tsm.read(entry / "outblob", 1 << 16)).report_data == data
    # Reading does not count as a write.
    assert tsm.read(entry / "generation", 64) == b"3\n"
    tsm.rmdir(entry)
    assert not tsm.is_dir(entry)


@pytest.mark.parametrize(
    ("action", "err"),
    [
        (lambda t: t.write(ROOT / "e" / "inblob", bytes(65)), errno.EFBIG),
        (lambda t: t.read(ROOT / "e" / "inblob", 64), errno.EACCES),
        (lambda t: t.write(ROOT / "e" / "provider", b"x"), errno.EACCES),
        (lambda t: t.write(ROOT / "e" / "generation", b"0"), errno.EACCES),
        (lambda t: t.read(ROOT / "e" / "outblob", 1 << 16), errno.EINVAL),  # no inblob yet
        (lambda t: t.mkdir(ROOT / "e"), errno.EEXIST),
        (lambda t: t.mkdir(ROOT / "e" / "sub"), errno.ENOENT),
        (lambda t: t.rmdir(ROOT / "other"), errno.ENOENT),
        (lambda t: t.read(ROOT / "other" / "generation", 64), errno.ENOENT),
    ],
    ids=[
        "inblob-over-64",
        "read-inblob",
        "write-provider",
        "write-generation",
        "outblob-before-inblob",
        "mkdir-twice",
        "mkdir-nested",
        "rmdir-absent",
        "absent-entry",
    ],
)
def test_stand_in_refuses_what_the_kernel_refuses(
    tsm: ConfigfsTsm, action: Callable[[ConfigfsTsm], object], err: int
) -> None:
    tsm.mkdir(ROOT / "e")
    with pytest.raises(OSError) as info:
        action(tsm)
    assert info.value.errno == err
    # A refused write is not counted.
    assert tsm.read(ROOT / "e" / "generation", 64) == b"0\n"


# -- TdxTee ---------------------------------------------------------------------


def test_quote_binds_report_data_and_verifies(
    tsm: ConfigfsTsm, platform: SimulatedPlatform
) -> None:
    tee = TdxTee(ROOT, filesystem=tsm)
    assert isinstance(tee, Tee)
    assert tee.kind is TeeKind.TDX
    quote = tee.get_quote(REPORT_DATA)
    now = CREATED + timedelta(hours=1)
    result = verify_quote(
        quote,
        platform.collateral(now, tee="tdx"),
        now=now,
        policy=Policy(allow_simulation=True, mr_td=MR_TD, report_data=REPORT_DATA),
        trust_anchor=platform.root_certificate,
    )
    assert (result.tee, result.mr_td) == ("tdx", MR_TD)
    assert tee.measurement == MR_TD


def test_each_quote_uses_a_fresh_entry_and_removes_it(tsm: ConfigfsTsm) -> None:
    tee = TdxTee(ROOT, filesystem=tsm)
    for _ in range(3):
        tee.get_quote(REPORT_DATA)
    assert tsm.entries == ()
    assert len(tsm.created) == len(set(tsm.created)) == 4  # the probe and three quotes
    assert all(name.startswith("confide-") for name in tsm.created)


def test_absent_interface_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TsmError) as info:
        TdxTee(tmp_path / "tsm" / "report")
    err = info.value
    assert err.code == "tsm.absent"
    assert str(tmp_path / "tsm" / "report") in str(err.observed)
    assert "Linux 6.7" in str(err.expected)


@pytest.mark.parametrize("provider", ["sev_guest", "", "tdx_guest2"])
def test_other_provider_is_refused_with_its_name(
    td_quote: Callable[[bytes], bytes], provider: str
) -> None:
    tsm = ConfigfsTsm(ROOT, td_quote, provider=provider)
    with pytest.raises(TsmError) as info:
        TdxTee(ROOT, filesystem=tsm)
    assert (info.value.code, info.value.observed, info.value.expected) == (
        "tsm.provider",
        repr(provider),
        "'tdx_guest'",
    )
    assert tsm.entries == ()


@pytest.mark.parametrize("their_data", [bytes(64), REPORT_DATA], ids=["other-data", "same-data"])
def test_concurrent_writer_is_detected_by_generation(tsm: ConfigfsTsm, their_data: bytes) -> None:
    tee = TdxTee(ROOT, filesystem=tsm)
    writes: list[Path] = []

    def intruder(entry: Path) -> None:
        # Another process writes the entry between our write and our read.
        tsm.write(entry / "inblob", their_data)
        writes.append(entry)

    tsm.before_outblob = intruder
    with pytest.raises(TsmError) as info:
        tee.get_quote(REPORT_DATA)
    assert len(writes) == 1  # the race did happen: not a vacuous pass
    err = info.value
    assert (err.code, err.observed, err.expected) == (
        "tsm.generation",
        "generation 2",
        "generation 1",
    )
    assert tsm.entries == ()


def test_concurrent_requests_each_get_their_own_quote(tsm: ConfigfsTsm) -> None:
    tees = [TdxTee(ROOT, filesystem=tsm), TdxTee(ROOT, filesystem=tsm)]
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        data = hashlib.sha512(bytes([i])).digest()
        try:
            results[i] = Quote.from_bytes(tees[i % 2].get_quote(data)).report_data
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert results == {i: hashlib.sha512(bytes([i])).digest() for i in range(8)}
    assert tsm.entries == ()


@pytest.mark.parametrize(
    ("outblob", "detail"),
    [(b"\x04\x00" + bytes(100), "malformed"), (None, "not a TDX quote")],
    ids=["malformed", "sgx-quote"],
)
def test_outblob_that_is_not_a_tdx_quote_is_refused(
    platform: SimulatedPlatform, outblob: bytes | None, detail: str
) -> None:
    def make(report_data: bytes) -> bytes:
        if outblob is not None:
            return outblob
        return platform.quote(report_data, mr_enclave=MR_ENCLAVE, mr_signer=MR_ENCLAVE)

    tee = TdxTee(ROOT, filesystem=ConfigfsTsm(ROOT, make))
    with pytest.raises(TsmError, match=detail) as info:
        tee.get_quote(REPORT_DATA)
    assert info.value.code == "tsm.outblob"


def test_report_data_must_be_64_bytes(tsm: ConfigfsTsm) -> None:
    tee = TdxTee(ROOT, filesystem=tsm)
    with pytest.raises(TeeError, match="exactly 64"):
        tee.get_quote(bytes(63))
    assert tsm.created[1:] == []  # refused before any entry was made


def test_there_is_no_sealing_key(tsm: ConfigfsTsm) -> None:
    with pytest.raises(TsmError) as info:
        TdxTee(ROOT, filesystem=tsm).sealing_key()
    assert info.value.code == "tdx.no_sealing_key"


def test_real_file_operations_clean_up_after_a_failure(tmp_path: Path) -> None:
    # A plain folder is not configfs: mkdir gives an empty entry with no provider.
    with pytest.raises(TsmError) as info:
        TdxTee(tmp_path)
    assert info.value.code == "tsm.io"
    assert "provider" in str(info.value)
    assert list(tmp_path.iterdir()) == []
