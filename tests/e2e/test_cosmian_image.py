"""End to end: an app written for Cosmian's data-science image (pandas, numpy) deploys from its
``mse.toml`` unchanged but for the plan, and its own tests pass through ``confide test``
(issue 15, 3; ADR 0024).

The project declares no requirements: its ``docker`` key names ``mse-ds``, so the deploy
uses that image's requirement set, locked in the committed ``requirements.lock`` (reused as
is). The operator fetches the locked wheels from its index (PyPI by default: pip's cache
keeps them for the rest of the run) and the runtime installs each after checking its
SHA-256. Without the index this test fails, naming what could not be fetched; it never skips.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from confide.client import AppContext
from support.cli import cli, deploy, router
from support.operators import OperatorProcess, create_token
from support.runtimes import EXAMPLES

pytestmark = pytest.mark.slow

PROJECT = EXAMPLES / "cosmian_pandas"


def test_a_pandas_app_for_cosmians_image_deploys_and_passes_its_tests(
    operator: OperatorProcess, tmp_path: Path
) -> None:
    token = create_token(operator.data_dir, "owner")
    done = deploy(
        operator,
        token,
        PROJECT / "mse.toml",
        "--allow-simulation",
        "-y",
        "--workspace",
        str(tmp_path),
        "--timeout",
        "600",
    )
    assert done.exit_code == 0, done.output
    assert "the requirement set of Cosmian's image mse-ds" in done.output
    assert "Cosmian/mse-docker-ds" in done.output  # where the set comes from
    assert "(reused as is)" in done.output
    assert "locked pandas==1.5.3" in done.output and "locked numpy==1.24.2" in done.output
    (context,) = tmp_path.glob("*.json")
    launch = AppContext.load(context).launch
    assert launch.requirements_sha256 is not None
    tested = cli(
        "test",
        "--no-install",
        "--connect",
        router(operator),
        "--operator",
        operator.api_url,
        "--allow-simulation",
        "--path",
        str(PROJECT / "mse.toml"),
        "--context",
        str(context),
    )
    assert tested.exit_code == 0, tested.output
    assert "4 passed" in tested.output
    assert not (PROJECT / ".confide").exists()
