"""The Kubernetes client is the ``confide[kubernetes]`` extra, not in the runtime's measurement.

ADR 0017 measures the closure of confide's requirements (extras not followed): lightkube
and its closure were operator-only code inside every enclave's measured set. Now they are
an extra, imported only when the operator's settings have a ``[kubernetes]`` table, and an
operator without them says which extra to install.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest

from confide.errors import UsageError
from confide.gramine import runtime_environment
from confide.gramine._markers import normalize

#: lightkube and what only it brings (httpx2, httpcore2, msgspec, pyyaml, truststore).
CLIENT = {"lightkube", "lightkube-models", "httpx2", "httpcore2", "msgspec", "truststore"}


def test_the_runtime_environment_does_not_measure_the_kubernetes_client(tmp_path: Path) -> None:
    measured = {
        normalize(d.split("==")[0]) for d in runtime_environment(cache_dir=tmp_path).distributions
    }
    assert "cryptography" in measured  # guard: the set was read
    assert not measured & CLIENT, measured & CLIENT


def test_confide_declares_the_extra() -> None:
    declared = requires("confide") or []
    kubernetes = [r for r in declared if "lightkube" in r]
    assert kubernetes and all('extra == "kubernetes"' in r for r in kubernetes), kubernetes


def test_importing_the_operator_and_the_cli_does_not_import_the_client() -> None:
    code = (
        "import sys, confide.cli, confide.operator, confide.operator._serve, confide.runtime\n"
        "loaded = sorted(m for m in ('lightkube', 'httpx2', 'msgspec') if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == ""


def test_without_the_extra_an_operator_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confide.operator._serve import _require_kubernetes_extra

    monkeypatch.setitem(sys.modules, "lightkube", None)  # as if not installed
    with pytest.raises(UsageError, match=r"lightkube is not installed") as caught:
        _require_kubernetes_extra()
    assert caught.value.hint is not None and "confide[kubernetes]" in caught.value.hint


def test_without_credentials_an_operator_says_where_they_come_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from confide.operator._serve import _kube_config

    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    with pytest.raises(UsageError, match="no Kubernetes credentials") as caught:
        _kube_config()
    assert caught.value.hint is not None and "KUBECONFIG" in caught.value.hint
