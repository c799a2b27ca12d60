"""End to end: an app importing a module the enclave does not have ends ``on_error`` after one
start, and ``confide deploy`` prints why and what to do (issue 15, 5).

The runtime imports the app once configured, so the deploy is waiting for it to run: it must
stop waiting at once, print the missing name and the fix, and exit non-zero. Before, the
supervisor restarted the runtime six times (about 20 s of backoff) before ``on_error``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from support.cli import deploy
from support.operators import OperatorProcess, app_body, create_token

pytestmark = pytest.mark.slow

#: A module no environment has: the app cannot be imported, however often it is restarted.
MISSING: str = "confide_missing_dependency_x"


def _project(root: Path) -> Path:
    code = root / "code"
    code.mkdir()
    (code / "app.py").write_text(f"import {MISSING}\n\napp = {MISSING}.app\n")
    (root / "tests").mkdir()
    project = root / "confide.toml"
    project.write_text(
        'name = "merge_join"\n'  # Cosmian's name, with its underscore (issue 15, 4)
        'python_application = "app:app"\n'
        'healthcheck_endpoint = "/"\n'
        'tests_cmd = "pytest"\n'
        "tests_requirements = []\n\n"
        "[cloud]\n"
        f"code = {json.dumps(str(code))}\n"
        'tests = "tests"\n'
        'project = "default"\n'
        'hardware = "small"\n'
    )
    return project


def test_a_missing_module_is_on_error_after_one_start_and_deploy_says_why(
    operator: OperatorProcess, tmp_path: Path
) -> None:
    token = create_token(operator.data_dir, "owner")
    done = deploy(operator, token, _project(tmp_path), "--allow-simulation")
    assert done.exit_code != 0, done.output
    assert "on_error" in done.output
    assert f"the app imports the module '{MISSING}'" in done.output
    assert "add it to the requirements" in done.output
    assert "Traceback" not in done.output
    with operator.client(token) as api:
        (app,) = api.get("/api/v1/apps").json()["apps"]
        app_id = uuid.UUID(app["id"])
        record = app_body(api, app_id)
        assert record["name"] == "merge_join"
        assert record["status"] == "on_error"
        assert f"'{MISSING}'" in record["status_detail"]
        assert "add it to the requirements" in record["status_detail"]
        metrics = api.get(f"/api/v1/apps/{app_id}/metrics")
        assert metrics.status_code == 200, metrics.text
        assert metrics.json()["restarts"] == 0  # one start, never restarted
