"""The operator routes app A's name to app B's enclave (issue 9, point 4).

B's enclave is genuine and B's certificate verifies; what must fail is the
claim that it is A's. A real runtime (a subprocess on the simulated TEE)
plays B; every ``confide`` command is pointed at it under A's name, as a
diverting router would do.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from confide.cli import app
from support.runtimes import (
    CONFIDE,
    DEADLINE,
    EXAMPLES,
    HOST,
    CodeUnderTest,
    Launch,
    new_platform,
    running,
)

pytestmark = pytest.mark.slow

APP_A = "a.apps.example"
APP_B = "b.apps.example"


def test_a_name_routed_to_another_apps_enclave_is_refused(tmp_path: Path) -> None:
    platform = new_platform(tmp_path / "sim")
    code = CodeUnderTest.package(EXAMPLES / "helloworld", tmp_path / "app.pkg")
    launch_b = Launch(code, tmp_path / "state", tmp_path / "sim", san=(APP_B,))
    root = tmp_path / "root.pem"
    root.write_bytes(platform.root_certificate.public_bytes(Encoding.PEM))
    collateral = tmp_path / "collateral.json"
    collateral.write_text(platform.collateral(datetime.now(UTC)).to_json())
    evidence = ["--collateral", str(collateral), "--root-ca", str(root), "--allow-simulation"]
    runner = CliRunner()

    with running(launch_b.args()) as runtime_b:
        router = f"{HOST}:{runtime_b.port()}"  # "the router", sending every name to B

        def verify(name: str, output: Path) -> tuple[int, str]:
            done = runner.invoke(
                app,
                ["verify", name, "--connect", router, *evidence, "--output", str(output)],
            )
            return done.exit_code, done.output

        # No fingerprint: B's genuine enclave must not pass as A's, nor be saved as A's.
        diverted = tmp_path / "a.pem"
        code_a, said = verify(APP_A, diverted)
        assert code_a == 1, said
        assert f"the enclave was not launched for {APP_A}" in said and APP_B in said
        assert not diverted.exists()
        # Guard: the same enclave under its own name verifies, and its certificate is saved.
        own = tmp_path / "b.pem"
        code_b, said = verify(APP_B, own)
        assert code_b == 0, said
        assert own.is_file()

        # The proxy, even given B's fingerprint (say a page showed it as A's).
        proxy = subprocess.run(
            [str(CONFIDE), "proxy", APP_A, "--listen", f"{HOST}:0", "--connect", router]
            + ["--fingerprint", launch_b.measurement().hex(), *evidence],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
        assert proxy.returncode == 1, proxy.stderr
        assert f"the enclave was not launched for {APP_A}" in proxy.stderr
        assert "listening on" not in proxy.stderr

        # Sealing a secret meant for A to B's certificate.
        secret = tmp_path / "secret"
        secret.write_bytes(b"A's database password")
        sealed = tmp_path / "sealed"
        seal = ["seal", str(secret), "--cert", str(own), *evidence, "--out", str(sealed)]
        refused = runner.invoke(app, [*seal, "--name", APP_A])
        assert refused.exit_code == 1, refused.output
        assert f"not launched for {APP_A}" in refused.output and not sealed.exists()
        unpinned = runner.invoke(app, seal)
        assert unpinned.exit_code == 2, unpinned.output
        assert "--unsafe-any-enclave" in unpinned.output and not sealed.exists()
