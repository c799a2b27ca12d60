"""The real DCAP vectors in ``../shared/vectors``, as :class:`VectorSet` objects.

The vectors are named assets with provenance (see their README files); they
are read in place, never copied into the repository. The fixtures that hand
them to tests (``sgx``, ``tdx``, ...) are in ``tests/conftest.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from confide.attestation import Collateral

#: The project root (``tests/support/../..``); the vectors sit beside it.
REPO_ROOT = Path(__file__).resolve().parents[2]
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
def load_vector_set(name: str) -> VectorSet:
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
