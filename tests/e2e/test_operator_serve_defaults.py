"""``confide operator serve`` with no ``--data-dir``: a working operator in the XDG data folder."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from support.operators import OperatorProcess

pytestmark = pytest.mark.slow


def test_serve_without_a_data_dir_uses_the_xdg_data_folder(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg-data"
    expected = xdg / "confide" / "operator"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_OPERATOR_")}
    cache = tmp_path / "xdg-cache"
    env |= {
        "XDG_DATA_HOME": str(xdg),
        "XDG_CACHE_HOME": str(cache),
        "HOME": str(tmp_path / "home"),
    }
    operator = OperatorProcess(expected, env=env, data_dir_option=False)
    try:
        assert "--data-dir" not in operator.args
        response = httpx.get(f"{operator.api_url}/api/v1/health", timeout=30)
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        assert (expected / "operator.db").is_file()
        assert not (tmp_path / "home").exists()
        # The runtime environment's hash cache (ADR 0017) is the XDG cache's, not the home's.
        assert (cache / "confide").is_dir()
    finally:
        assert operator.terminate() == 0, operator.stderr
