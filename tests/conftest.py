"""Shared fixtures: the real DCAP vectors in ``../shared/vectors``.

The vectors are named assets with provenance (see their README files); they
are read in place, never copied into the repository. Test modules type their
fixtures with ``if TYPE_CHECKING: from conftest import VectorSet``, so nothing
imports this module at run time but pytest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from confide.attestation import Collateral

#: The project root (``tests/..``); the vectors sit beside it.
REPO_ROOT = Path(__file__).resolve().parent.parent
VECTORS_DIR = REPO_ROOT.parent / "shared" / "vectors"

SGX_DCAPQVL = "sgx-dcapqvl-00A067110000"
SGX_AUTOMATA = "sgx-automata-00606A000000"
TDX_DCAPQVL = "tdx-dcapqvl-B0C06F000000"
TDX_NEGATIVE = "tdx-gotdxguest-50806F000000-negative"

ONE_SECOND = timedelta(seconds=1)


def at(unix: int) -> datetime:
    """A UNIX time as the timezone-aware datetime the verifier takes."""
    return datetime.fromtimestamp(unix, UTC)


@dataclass(frozen=True)
class VectorSet:
    """One vector set, read once; :meth:`collateral` parses a fresh object each call.

    A fresh :class:`Collateral` matters: the verifier caches trust decisions on it.
    """

    name: str
    path: Path
    quote: bytes
    collateral_json: str
    expected: dict[str, Any]

    @property
    def verification_time(self) -> datetime:
        return at(self.expected["verification_time"])

    @property
    def window_start(self) -> datetime:
        return at(self.expected["validity_window"][0])

    @property
    def window_end(self) -> datetime:
        return at(self.expected["validity_window"][1])

    def collateral(self, file: str = "collateral.json") -> Collateral:
        text = self.collateral_json if file == "collateral.json" else self.text(file)
        return Collateral.from_json(text)

    def text(self, file: str) -> str:
        return (self.path / file).read_text()

    def data(self, file: str) -> bytes:
        return (self.path / file).read_bytes()


@cache
def _load(name: str) -> VectorSet:
    path = VECTORS_DIR / name
    if not path.is_dir():
        raise FileNotFoundError(f"vector set {name} not found under {VECTORS_DIR}")
    return VectorSet(
        name=name,
        path=path,
        quote=(path / "quote.bin").read_bytes(),
        collateral_json=(path / "collateral.json").read_text(),
        expected=json.loads((path / "expected.json").read_text()),
    )


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """``../shared/vectors`` relative to the project root."""
    assert VECTORS_DIR.is_dir(), f"the shared vectors are missing: {VECTORS_DIR}"
    return VECTORS_DIR


@pytest.fixture(scope="session")
def load_vector(vectors_dir: Path) -> Callable[[str], VectorSet]:
    """Load a vector set by folder name (read from disk once per session)."""
    return _load


@pytest.fixture
def sgx(load_vector: Callable[[str], VectorSet]) -> VectorSet:
    """The SGX v3 set from dcap-qvl (ConfigurationAndSWHardeningNeeded, two advisories)."""
    return load_vector(SGX_DCAPQVL)


@pytest.fixture
def sgx_automata(load_vector: Callable[[str], VectorSet]) -> VectorSet:
    """The SGX v3 set from Automata (another platform, Platform CA, SWHardeningNeeded)."""
    return load_vector(SGX_AUTOMATA)


@pytest.fixture
def tdx(load_vector: Callable[[str], VectorSet]) -> VectorSet:
    """The TDX v4 set from dcap-qvl (UpToDate, 70 zero bytes of padding)."""
    return load_vector(TDX_DCAPQVL)


@pytest.fixture
def tdx_negative(load_vector: Callable[[str], VectorSet]) -> VectorSet:
    """The TDX v4 set that must be rejected (no TCB level; 39 non-zero trailing bytes)."""
    return load_vector(TDX_NEGATIVE)


@pytest.fixture(autouse=True, scope="session")
def _user_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The user's config and state folders (owner key, logs seen) of this test session: a
    deploy creates an owner key there, never in the real home folder."""
    home = tmp_path_factory.mktemp("user")
    saved = {name: os.environ.get(name) for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME")}
    os.environ["XDG_CONFIG_HOME"] = str(home / "config")
    os.environ["XDG_STATE_HOME"] = str(home / "state")
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
