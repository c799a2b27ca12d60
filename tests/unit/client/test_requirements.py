"""The owner's declared requirements, and the lock deploy resolves them into (ADR 0024)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from confide.client._config import ProjectConfig
from confide.client._requirements import (
    COSMIAN_IMAGES,
    Declared,
    Target,
    cosmian_image,
    declared_requirements,
    lock_for_deploy,
    lock_from_report,
)
from confide.errors import UsageError
from confide.wire import RequirementsLock
from support.wheels import write_wheel

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TARGET = Target(python=f"{sys.version_info.major}.{sys.version_info.minor}")


def _project(folder: Path, extra_top: str = "", extra_cloud: str = "") -> ProjectConfig:
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "tests").mkdir(exist_ok=True)
    (folder / "src" / "app.py").write_text("app = None\n")
    (folder / "confide.toml").write_text(
        'name = "deps"\npython_application = "app:app"\nhealthcheck_endpoint = "/"\n'
        f'tests_cmd = "pytest"\ntests_requirements = []\n{extra_top}\n'
        f'[cloud]\ncode = "src"\ntests = "tests"\nproject = "default"\nhardware = "small"\n'
        f"{extra_cloud}\n"
    )
    return ProjectConfig.load(folder, now=NOW)


def test_the_project_file_key_comes_first(tmp_path: Path) -> None:
    config = _project(tmp_path, 'requirements = ["tinydep==1.0"]')
    (tmp_path / "src" / "requirements.txt").write_text("other\n")
    declared = declared_requirements(config)
    assert declared is not None and declared.requirements == ("tinydep==1.0",)
    assert declared.source.startswith("confide.toml requirements sha256:")


def test_requirements_txt_in_the_code_folder(tmp_path: Path) -> None:
    config = _project(tmp_path)
    (tmp_path / "src" / "requirements.txt").write_text(
        "# what the app imports\npandas>=2  # dataframes\n\nflask[async]==3.0.0\n"
    )
    declared = declared_requirements(config)
    assert declared is not None
    assert declared.requirements == ("pandas>=2", "flask[async]==3.0.0")
    assert declared.source.startswith("requirements.txt sha256:")


@pytest.mark.parametrize(
    "line",
    [
        "--index-url https://evil.example/simple",
        "-e .",
        "git+https://x/y.git",
        "./local",
        "flask @ https://evil.example/flask.whl",
        'flask; python_version > "3" --config-settings=x=y',
    ],
)
def test_pip_options_urls_and_paths_are_refused(tmp_path: Path, line: str) -> None:
    config = _project(tmp_path)
    (tmp_path / "src" / "requirements.txt").write_text(line + "\n")
    with pytest.raises(UsageError, match="is not a requirement"):
        declared_requirements(config)


def test_a_cosmian_image_without_requirements_gets_its_set(tmp_path: Path) -> None:
    config = _project(tmp_path, extra_cloud='docker = "ghcr.io/cosmian/mse-ds:20230228091325"')
    declared = declared_requirements(config)
    assert declared is not None
    assert declared.requirements == COSMIAN_IMAGES["mse-ds"].requirements
    assert "pandas==1.5.3" in declared.requirements
    assert "Cosmian's image mse-ds" in declared.description
    assert "Cosmian/mse-docker-ds" in declared.description  # the source is cited
    # Declared requirements win over the image's.
    both = _project(
        tmp_path / "b",
        'requirements = ["tinydep"]',
        'docker = "ghcr.io/cosmian/mse-ds:20230228091325"',
    )
    assert declared_requirements(both) == Declared(
        ("tinydep",),
        declared_requirements(both).source,  # type: ignore[union-attr]
        "the requirements in confide.toml",
    )


@pytest.mark.parametrize(
    ("docker", "image"),
    [
        ("ghcr.io/cosmian/mse-flask:20230710125733", "mse-flask"),
        ("ghcr.io/cosmian/mse-fastapi:20230228", "mse-fastapi"),
        ("ghcr.io/cosmian/mse-pytorch@sha256:" + "0" * 64, "mse-pytorch"),
        ("ghcr.io/cosmian/mse-ds", "mse-ds"),
        ("ghcr.io/someone/mse-ds:1", None),
        ("python:3.11", None),
    ],
)
def test_cosmian_images_are_recognized_by_name(docker: str, image: str | None) -> None:
    found = cosmian_image(docker)
    assert (found.name if found else None) == image


def _report(*items: tuple[str, str, str]) -> bytes:
    return json.dumps(
        {
            "install": [
                {
                    "metadata": {"name": name, "version": version},
                    "download_info": {
                        "url": url,
                        "archive_info": {"hashes": {"sha256": "ab" * 32}},
                    },
                }
                for name, version, url in items
            ]
        }
    ).encode()


def test_a_report_becomes_a_lock_without_what_the_runtime_has() -> None:
    declared = Declared(("pandas",), "requirements.txt sha256:00", "x")
    lock = lock_from_report(
        _report(
            ("pandas", "2.2.3", "https://files/pandas-2.2.3-cp311-manylinux.whl"),
            ("Typing_Extensions", "4.12.2", "https://files/typing_extensions-4.12.2-py3.whl"),
            ("python-dateutil", "2.9.0", "https://files/python_dateutil-2.9.0-py3.whl"),
        ),
        declared,
        TARGET,
        provided=("typing-extensions==4.12.2", "h11==0.16.0"),
    )
    assert lock.pins() == ("pandas==2.2.3", "python-dateutil==2.9.0")
    assert lock.source == declared.source


def test_a_source_distribution_is_never_locked() -> None:
    with pytest.raises(UsageError, match="not a wheel"):
        lock_from_report(
            _report(("evil", "1.0", "https://files/evil-1.0.tar.gz")),
            Declared(("evil",), "s", "x"),
            TARGET,
            provided=(),
        )


def test_a_committed_lock_is_reused_as_is_and_a_changed_declaration_is_resolved_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "index"
    write_wheel(wheels, "tinydep", "1.0")
    write_wheel(wheels, "tinydep", "1.1")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    config = _project(tmp_path / "p", 'requirements = ["tinydep==1.0"]')
    first = lock_for_deploy(config, provided=tuple, target=TARGET)
    assert first is not None and not first.reused
    assert first.lock.pins() == ("tinydep==1.0",)
    assert first.path.read_bytes() == first.lock.to_bytes()
    # The same declaration: the file is reused as is, pip is not run (it would fail).
    again = lock_for_deploy(config, provided=tuple, target=TARGET, pip=["/bin/false"])
    assert again is not None and again.reused and again.lock == first.lock
    # Another declaration: resolved again, and the lock rewritten.
    bumped = _project(tmp_path / "p", 'requirements = ["tinydep==1.1"]')
    second = lock_for_deploy(bumped, provided=tuple, target=TARGET)
    assert second is not None and not second.reused
    assert second.lock.pins() == ("tinydep==1.1",)
    assert RequirementsLock.from_bytes(second.path.read_bytes()) == second.lock


def test_an_unresolvable_requirement_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    config = _project(tmp_path / "p", 'requirements = ["no-such-dist-here==9"]')
    with pytest.raises(UsageError, match="pip could not resolve"):
        lock_for_deploy(config, provided=tuple, target=TARGET)
    assert not (tmp_path / "p" / "requirements.lock").exists()


def test_no_declaration_and_no_lock_is_no_lock(tmp_path: Path) -> None:
    assert lock_for_deploy(_project(tmp_path), provided=tuple, pip=["/bin/false"]) is None
