"""``confide scaffold`` and ``confide localtest``: a new project's own tests pass against it.

``localtest`` runs with ``--no-install`` here (offline and fast): the app and its
tests use this interpreter, which has flask, httpx, hypercorn and pytest.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from confide.cli import app
from confide.cli._output import Output
from confide.cli._project import scaffold_project
from confide.client import ProjectConfig, make_venv

#: Bounds for every localtest run here.
TIMEOUTS = ["--startup-timeout", "30", "--tests-timeout", "120"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return scaffold_project("hello", tmp_path).parent


def _localtest(runner: CliRunner, project: Path, *extra: str) -> Result:
    return runner.invoke(
        app, ["localtest", "--path", str(project), "--no-install", *TIMEOUTS, *extra]
    )


def _set_tests_cmd(toml: Path, command: str) -> None:
    text = toml.read_text()
    assert 'tests_cmd = "pytest"' in text
    toml.write_text(text.replace('tests_cmd = "pytest"', f"tests_cmd = {json.dumps(command)}"))


# -- scaffold --------------------------------------------------------------------------------


def test_scaffold_creates_a_valid_project(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["scaffold", "hello", "--into", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "hello"
    assert result.stdout.strip() == str(root)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == [
        ".gitignore",
        "README.md",
        "confide.toml",
        "secrets.json",
        "src/.confideignore",
        "src/app.py",
        "src/requirements.txt",
        "tests/conftest.py",
        "tests/test_app.py",
    ]
    assert stat.S_IMODE((root / "secrets.json").stat().st_mode) == 0o600
    assert "{{" not in "".join(p.read_text() for p in root.rglob("*") if p.is_file())
    config = ProjectConfig.load(root)
    assert config.name == "hello"
    assert config.python_application == "app:app"
    assert config.cloud.code == root / "src"
    assert config.cloud.secrets == root / "secrets.json"
    assert config.warnings == ()
    assert "app = Flask(" in (root / "src" / "app.py").read_text()
    assert "TEST_REMOTE_URL" in (root / "tests" / "conftest.py").read_text()


def test_scaffold_never_writes_into_an_existing_folder(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "mine.txt").write_text("keep")
    result = runner.invoke(app, ["scaffold", "hello", "--into", str(tmp_path)])
    assert result.exit_code == 2
    assert "already exists; scaffold never writes into an existing folder" in result.stderr
    assert [p.name for p in (tmp_path / "hello").iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("name", ["Hello", "my app", "_x", "../up", "-x", "a" * 64, ""])
def test_scaffold_rejects_names_that_are_not_app_names(
    runner: CliRunner, tmp_path: Path, name: str
) -> None:
    result = runner.invoke(app, ["scaffold", "--into", str(tmp_path), "--", name])
    assert result.exit_code == 2
    assert "expected 1 to 63 lower-case letters" in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- localtest -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_scaffolded_project_passes_its_own_tests(runner: CliRunner, project: Path) -> None:
    result = _localtest(runner, project)
    assert result.exit_code == 0, result.output
    assert "3 passed" in result.stdout  # the tests' output is the result
    assert "[app] " in result.stderr and '"GET /health' in result.stderr  # the app's log
    assert "the tests passed" in result.stderr


@pytest.mark.slow
def test_a_failing_test_fails_localtest_with_the_tests_exit_code(
    runner: CliRunner, project: Path
) -> None:
    with (project / "tests" / "test_app.py").open("a") as f:
        f.write("\n\ndef test_fails(client: httpx.Client) -> None:\n")
        f.write('    assert client.get("/").text == "something else"\n')
    result = _localtest(runner, project)
    assert result.exit_code == 1, result.output  # pytest's "tests failed"
    assert "1 failed, 3 passed" in result.stdout
    assert "the tests failed (exit 1)" in result.stderr


@pytest.mark.parametrize("code", [0, 3, 7])
def test_the_exit_code_is_the_tests_own(runner: CliRunner, project: Path, code: int) -> None:
    _set_tests_cmd(project / "confide.toml", f"python -c 'import sys; sys.exit({code})'")
    assert _localtest(runner, project).exit_code == code


def test_the_tests_see_the_app_and_its_secrets(runner: CliRunner, project: Path) -> None:
    check = (
        "import json, os, sys, httpx; "
        "url = os.environ['TEST_REMOTE_URL']; "
        "names = httpx.get(url + '/secrets').json()['names']; "
        "given = json.load(open(os.environ['TEST_SECRETS_PATH'])); "
        "assert url.startswith('http://127.0.0.1:') and names == ['api_token'] == sorted(given); "
        "assert os.environ['TEST_SECRET_JSON'] == os.environ['TEST_SECRETS_PATH']"
    )
    _set_tests_cmd(project / "confide.toml", f'python -c "{check}"')
    result = _localtest(runner, project)
    assert result.exit_code == 0, result.output


def test_the_app_is_stopped_afterwards(runner: CliRunner, project: Path, tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    _set_tests_cmd(
        project / "confide.toml",
        f"python -c \"import os; open('{url_file}', 'w').write(os.environ['TEST_REMOTE_URL'])\"",
    )
    assert _localtest(runner, project).exit_code == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(url_file.read_text() + "/health", timeout=5)


def test_an_app_that_crashes_is_reported(runner: CliRunner, project: Path) -> None:
    (project / "src" / "app.py").write_text("raise SystemExit('no config')\n")
    result = _localtest(runner, project)
    assert result.exit_code == 2
    assert "the app exited (code" in result.stderr
    assert "before answering http://127.0.0.1:" in result.stderr


def test_an_app_that_never_gets_healthy_times_out(runner: CliRunner, project: Path) -> None:
    app_py = project / "src" / "app.py"
    app_py.write_text(app_py.read_text().replace('return "OK", HTTPStatus.OK', 'return "no", 503'))
    result = runner.invoke(
        app, ["localtest", "--path", str(project), "--no-install", "--startup-timeout", "1"]
    )
    assert result.exit_code == 2
    assert "with 2xx within 1s (last: HTTP 503)" in result.stderr


def test_a_tests_cmd_that_does_not_exist(runner: CliRunner, project: Path) -> None:
    _set_tests_cmd(project / "confide.toml", "no-such-test-runner-here --all")
    result = _localtest(runner, project)
    assert result.exit_code == 2
    assert "tests_cmd: 'no-such-test-runner-here' not found" in result.stderr


def test_a_bad_project_file_is_one_line(runner: CliRunner, project: Path) -> None:
    toml = project / "confide.toml"
    toml.write_text(toml.read_text().replace('code = "src"\n', ""))
    result = _localtest(runner, project)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "missing key [cloud] code" in result.stderr


def test_an_mse_toml_is_used_and_its_unused_keys_warned_once(
    runner: CliRunner, project: Path
) -> None:
    text = (project / "confide.toml").read_text()
    (project / "confide.toml").unlink()
    text = text.replace(
        "[cloud]\n",
        '[cloud]\nregion = "eu-west"\n',  # a key Confide does not use
    )
    (project / "mse.toml").write_text(text)
    _set_tests_cmd(project / "mse.toml", "python -c 'pass'")
    result = _localtest(runner, project)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("[cloud] region is not used by Confide") == 1


@pytest.mark.slow
def test_the_throwaway_venv_does_not_see_system_packages(tmp_path: Path) -> None:
    env = make_venv(
        tmp_path / "venv", [], what="nothing", base_env={}, timeout=120, output=Output()
    )
    assert env.isolated and env.python.is_file()
    assert "include-system-site-packages = false" in (tmp_path / "venv" / "pyvenv.cfg").read_text()
