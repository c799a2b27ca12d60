"""OperatorSettings: defaults, the TOML file, overrides, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from confide.errors import UsageError
from confide.operator import (
    DEFAULT_PLANS,
    OperatorSettings,
    TeeBackend,
    default_data_dir,
)
from confide.wire.api import Plan

RUNTIME = bytes(range(32))


def test_defaults(tmp_path: Path) -> None:
    s = OperatorSettings.load(tmp_path, runtime_sha256=RUNTIME)
    assert s.data_dir == tmp_path.resolve()
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'operator.db'}"
    assert (s.api_host, s.api_port) == ("127.0.0.1", 8080)
    assert s.base_domain == "confide.localhost"
    assert s.router_address == "127.0.0.1:8443"
    assert s.plans == DEFAULT_PLANS
    assert s.max_package_size == 256 * 1024 * 1024
    assert s.max_apps_per_account == 20
    assert s.runtime_nice == 10  # runtimes below the operator's CPU priority (ADR 0029)
    assert s.tee is TeeBackend.SIMULATION
    assert s.console_https is False
    assert s.runtime_fork is True  # local runtimes forked from a parent (ADR 0031)
    assert s.blobs_dir == s.data_dir / "blobs" and s.logs_dir == s.data_dir / "logs"


def test_the_config_file_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "operator.toml").write_text(
        """
        database_url = "postgresql+psycopg://confide:secret@db/confide"
        api_port = 9000
        base_domain = "apps.example.com"
        router_host = "0.0.0.0"
        router_port = 443
        tee = "gramine"
        max_package_size = 1024
        max_apps_per_account = 3
        console_https = true
        runtime_nice = 0
        runtime_fork = false

        [plans.tiny]
        memory_mib = 256
        cores = 1

        [plans.huge]
        memory_mib = 65536
        cores = 16
        """
    )
    s = OperatorSettings.load(tmp_path, runtime_sha256=RUNTIME, api_port=9100, tee=None)
    assert s.api_port == 9100  # the override wins; None overrides nothing
    assert s.tee is TeeBackend.GRAMINE
    assert s.runtime_nice == 0
    assert s.router_address == "0.0.0.0:443"
    assert s.console_https is True
    assert s.runtime_fork is False
    assert s.plans == (Plan("tiny", 256, 1), Plan("huge", 65536, 16))
    assert s.plan("huge").cores == 16 and s.has_plan("tiny") and not s.has_plan("small")
    assert s.database_url_for_display() == "postgresql+psycopg://confide:***@db/confide"
    with pytest.raises(UsageError, match="no plan 'small'"):
        s.plan("small")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("api_port = 70000", "api_port must be in 0..65535"),
        ("api_port = '80'", "api_port must be an integer"),
        ("color = 'blue'", "unknown key 'color'"),
        ("tee = 'sgx-please'", "tee must be one of simulation, gramine"),
        ("database_url = 'mysql://x/y'", "database backend 'mysql' is not supported"),
        ("database_url = 'not a url'", "database URL is not valid"),
        ("base_domain = 'Not A Domain'", "base_domain"),
        ("max_package_size = 0", "max_package_size must be positive"),
        ("max_apps_per_account = -1", "max_apps_per_account must be positive"),
        ("runtime_nice = -1", r"runtime_nice must be in 0\.\.19"),
        ("runtime_nice = 20", r"runtime_nice must be in 0\.\.19"),
        ("runtime_nice = 'low'", "runtime_nice must be an integer"),
        ("plans = 3", r"\[plans\] must be a table"),
        ("[plans.x]\nmemory_mib = 1", "must have memory_mib and cores"),
        ("[plans.x]\nmemory_mib = 1\ncores = true", "must be integers"),
        ("[plans.x]\nmemory_mib = 0\ncores = 1", "memory_mib must be in"),
        ("[plans.x]\nmemory_mib = 1\ncores = 0", "cores must be in"),
        ("[plans.Big]\nmemory_mib = 1\ncores = 1", "plan name 'Big'"),
        ("api_port = ", "not valid TOML"),
        ("supervisor = 'sometimes'", "supervisor must be one of always, lease, never"),
        ("console_https = 'yes'", "console_https must be true or false"),
        ("runtime_fork = 1", "runtime_fork must be true or false"),
        ("supervisor = 'never'", "replicas sharing one database"),
        (
            "database_url = 'postgresql+psycopg://u@db/c'\nsupervisor = 'lease'",
            r"needs a \[kubernetes\] lease",
        ),
        (
            "database_url = 'postgresql+psycopg://u@db/c'\nsupervisor = 'lease'\n"
            "[kubernetes]\nnamespace = 'a'\nimage = 'i'\noperator_id = 'o'\n"
            "blob_url = 'http://o'\nsimulation_claim = 's'\nlease = 'Not_A_Label'",
            "lease must be a DNS label",
        ),
    ],
)
def test_bad_configuration_is_refused(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "custom.toml"
    config.write_text(toml + "\n")
    with pytest.raises(UsageError, match=message):
        OperatorSettings.load(tmp_path, runtime_sha256=RUNTIME, config_file=config)


def test_unreadable_or_huge_config_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the operator configuration"):
        OperatorSettings.load(tmp_path, runtime_sha256=RUNTIME, config_file=tmp_path / "nope")
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(UsageError, match="larger than"):
        OperatorSettings.load(tmp_path, runtime_sha256=RUNTIME, config_file=big)


def test_direct_construction_checks_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    with pytest.raises(UsageError, match="absolute"):
        OperatorSettings(data_dir=Path("rel"), database_url=url, runtime_sha256=RUNTIME)
    with pytest.raises(UsageError, match="32 bytes"):
        OperatorSettings(data_dir=tmp_path, database_url=url, runtime_sha256=b"x")
    with pytest.raises(UsageError, match="unique"):
        OperatorSettings(
            data_dir=tmp_path,
            database_url=url,
            runtime_sha256=RUNTIME,
            plans=(Plan("a", 1, 1), Plan("a", 2, 2)),
        )
    with pytest.raises(UsageError, match="unknown operator settings: colour"):
        OperatorSettings.load(tmp_path, runtime_sha256=RUNTIME, colour="red")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"XDG_DATA_HOME": "/xdg", "HOME": "/home/u"}, "/xdg/confide/operator"),
        ({"HOME": "/home/u"}, "/home/u/.local/share/confide/operator"),
        # The XDG specification: a relative path is invalid, and ignored.
        ({"XDG_DATA_HOME": "rel", "HOME": "/home/u"}, "/home/u/.local/share/confide/operator"),
        ({"XDG_DATA_HOME": "", "HOME": "/home/u"}, "/home/u/.local/share/confide/operator"),
    ],
)
def test_the_default_data_folder_is_xdgs(environ: dict[str, str], expected: str) -> None:
    assert default_data_dir(environ) == Path(expected)


def test_gramine_settings(tmp_path: Path) -> None:
    (tmp_path / "operator.toml").write_text('tee = "gramine"\nallow_simulated_gramine = true\n')
    s = OperatorSettings.load(tmp_path, runtime_sha256=RUNTIME)
    assert s.allow_simulated_gramine and s.simulated
    assert not OperatorSettings.load(tmp_path, runtime_sha256=RUNTIME, tee="gramine",
                                     allow_simulated_gramine=False).simulated  # fmt: skip
    for text, error in (
        ('tee = "gramine"\nallow_simulated_gramine = "yes"\n', "true or false"),
        ("allow_simulated_gramine = true\n", 'needs tee = "gramine"'),
    ):
        (tmp_path / "operator.toml").write_text(text)
        with pytest.raises(UsageError, match=error):
            OperatorSettings.load(tmp_path, runtime_sha256=RUNTIME)
