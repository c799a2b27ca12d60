"""``confide deploy``'s prediction of a Gramine enclave's MRENCLAVE (ADR 0018).

The operator states how it renders the enclave (``AppRecord.gramine``); nothing it states
is trusted: a wrong enclave size or thread count only makes the prediction differ from
what the enclave reports, so the verification that follows fails closed. Gramine is not
installed here: two small tools written by the test sign as the simulated TEE does.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from confide.client import gramine_fingerprint, throwaway_sgx_signer
from confide.errors import PolicyError, UsageError
from confide.gramine import render_app, runtime_environment, simulated_mrenclave
from confide.runtime import CodeSource, launch_manifest
from confide.wire.api import GramineEnclave

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "helloworld"
SIGN = """#!{python}
import sys
from pathlib import Path
from confide.gramine import simulated_mrenclave
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
text = Path(args["--manifest"]).read_text()
Path(args["--output"]).write_text(text)
Path(args["--output"].removesuffix(".manifest.sgx") + ".sig").write_text(
    simulated_mrenclave(text).hex())
"""
VIEW = """#!{python}
import sys
from pathlib import Path
print("    mr_enclave: " + Path(sys.argv[1]).read_text())
"""
LAUNCH = launch_manifest(
    app_id=uuid.UUID("0f0f0f0f-0000-4000-8000-000000000003"), application="app:app",
    code=CodeSource.plaintext_folder(EXAMPLE), ratls_expiry=1900000000, certificate=None,
    san=("a.example",), subject=None,
)  # fmt: skip
ASKED: Any = SimpleNamespace(certificate=None)


def record(size: str | None, threads: int = 32) -> Any:
    shape = None if size is None else GramineEnclave(enclave_size=size, max_threads=threads)
    return SimpleNamespace(gramine=shape)


@pytest.fixture(name="tools")
def tools_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, source in (("gramine-sgx-sign", SIGN), ("gramine-sgx-sigstruct-view", VIEW)):
        (folder / name).write_text(source.format(python=sys.executable))
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    return folder


def test_the_prediction_is_the_rendered_manifests_and_a_lie_only_changes_it(
    tools: Path, tmp_path: Path
) -> None:
    mrenclave, shape = gramine_fingerprint(record("512M"), LAUNCH, ASKED, tmp_path)
    text = render_app(LAUNCH, runtime_environment(), enclave_size="512M", max_threads=32)
    assert (mrenclave, shape) == (simulated_mrenclave(text), ("512M", 32))
    assert mrenclave != LAUNCH.measurement()
    # An operator stating another size or thread count than it renders: another value,
    # which the enclave's quote will not match (deploy then sends nothing).
    lies = {gramine_fingerprint(r, LAUNCH, ASKED, tmp_path)[0]
            for r in (record("1G"), record("512M", 64))}  # fmt: skip
    assert mrenclave not in lies and len(lies) == 2


def test_an_operator_that_does_not_say_how_it_renders_is_refused(
    tools: Path, tmp_path: Path
) -> None:
    with pytest.raises(PolicyError) as caught:
        gramine_fingerprint(record(None), LAUNCH, ASKED, tmp_path)
    assert caught.value.code == "deploy.gramine"


def test_without_gramine_it_says_which_tools_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError) as caught:
        gramine_fingerprint(record("512M"), LAUNCH, ASKED, tmp_path)
    assert "gramine-sgx-sign and gramine-sgx-sigstruct-view are not on PATH" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_throwaway_signer_is_an_sgx_key() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(throwaway_sgx_signer(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert (key.key_size, key.public_key().public_numbers().e) == (3072, 3)
