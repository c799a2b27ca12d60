"""The operator's log key file: created once (0600), read back, refused when unsafe or foreign."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from confide.errors import UsageError
from confide.operator._translog import LOG_KEY_FILE, load_log_key

ORIGIN = "apps.example/confide-log"


def test_created_once_then_read_back(tmp_path: Path) -> None:
    key = load_log_key(tmp_path / "data", ORIGIN)
    path = tmp_path / "data" / LOG_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_log_key(tmp_path / "data", ORIGIN) == key
    assert key.seed.hex() not in repr(key)


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_log_key(tmp_path, ORIGIN)
    (tmp_path / LOG_KEY_FILE).chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        load_log_key(tmp_path, ORIGIN)


def test_a_log_keeps_its_origin(tmp_path: Path) -> None:
    load_log_key(tmp_path, ORIGIN)
    with pytest.raises(UsageError, match="keeps its origin"):
        load_log_key(tmp_path, "other.example/confide-log")


@pytest.mark.parametrize("seed", ["not*base64", "A" * 42 + "B="])
def test_a_seed_that_is_not_canonical_base64_is_a_usage_error(tmp_path: Path, seed: str) -> None:
    load_log_key(tmp_path, ORIGIN)
    (tmp_path / LOG_KEY_FILE).write_text(f"confide-log-key-v1 {ORIGIN} {seed}\n")
    with pytest.raises(UsageError, match="the log key .* is not (canonical )?base64"):
        load_log_key(tmp_path, ORIGIN)
