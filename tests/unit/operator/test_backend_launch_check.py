"""The process backend's launch check reuses the runtime environment's digest for a few
seconds: a burst of starts scanned the whole environment (thousands of ``stat`` calls, the
hash cache read again) once per start, a fifth of the operator's CPU in a 40-app burst
(issue 14, ADR 0029). The check itself is unchanged: a launch that would not measure as
its stored manifest is still refused."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from confide.crypto import PackageKey, encrypt_package
from confide.gramine import RuntimeEnvironment, runtime_environment
from confide.operator import AppSpec, FileLogSource, LaunchRefused, LocalProcessBackend, TeeBackend
from confide.operator._backend import RUNTIME_DIGEST_TTL
from confide.runtime import _manifest, runtime_code_hash
from confide.wire import LaunchManifest, TlsMode

HELLO = Path(__file__).resolve().parents[3] / "examples" / "helloworld"
NOW = datetime.now(UTC)


def _spec(tmp_path: Path, runtime_sha256: bytes) -> AppSpec:
    app_id = uuid.uuid4()
    package = tmp_path / f"{app_id}.pkg"
    with package.open("wb") as f:
        info = encrypt_package(HELLO, f, PackageKey.generate())
    manifest = LaunchManifest(
        runtime_sha256=runtime_sha256,
        package_sha256=info.digest,
        app_id=app_id,
        application="app:app",
        tls=TlsMode.RATLS,
        ratls_expiry=int(NOW.timestamp()) + 3600,
        certificate_sha256=None,
        san=(f"{app_id}.confide.test",),
        subject=None,
    )
    return AppSpec(app_id, manifest, package, None, memory_mib=512, cores=1)


def test_a_burst_of_launch_checks_scans_the_environment_once_per_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans: list[int] = []

    def counted(
        requirements: Sequence[str] = (),
        *,
        cache_dir: Path | None = None,
        confide_package: Path | None = None,
    ) -> RuntimeEnvironment:
        scans.append(1)
        return runtime_environment(
            requirements, cache_dir=cache_dir, confide_package=confide_package
        )

    digest = runtime_code_hash()
    monkeypatch.setattr(_manifest, "runtime_environment", counted)
    clock = [100.0]
    backend = LocalProcessBackend(
        data_dir=tmp_path / "data",
        log_source=FileLogSource(tmp_path / "logs"),
        tee=TeeBackend.SIMULATION,
        monotonic=lambda: clock[0],
    )
    for _ in range(3):  # three starts within the TTL: one scan
        backend._prepare(_spec(tmp_path, digest), NOW)
        clock[0] += RUNTIME_DIGEST_TTL / 4
    assert len(scans) == 1

    clock[0] += RUNTIME_DIGEST_TTL  # later: scanned again
    backend._prepare(_spec(tmp_path, digest), NOW)
    assert len(scans) == 2

    # The reused digest is still checked against the stored manifest.
    stale = _spec(tmp_path, bytes(32))
    with pytest.raises(LaunchRefused, match="runtime_sha256"):
        backend._prepare(stale, NOW)
