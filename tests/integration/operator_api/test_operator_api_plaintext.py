"""The operator never holds plaintext: only the encrypted package reaches it."""

from __future__ import annotations

import io
import logging
import uuid
from pathlib import Path

import pytest

from confide.crypto import PackageKey, encrypt_package
from support.operator_api import (
    Operator,
    manifest,
    upload,
)


def test_no_plaintext_in_the_database_blobs_or_logs(
    operator: Operator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    marker = f"PLAINTEXT-MARKER-{uuid.uuid4().hex}"
    app_dir = tmp_path / "secret-app"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(f"SECRET = {marker!r}\nasync def app(s, r, t): pass\n")
    (app_dir / "data.txt").write_text(marker * 100)
    out = io.BytesIO()
    encrypt_package(app_dir, out, PackageKey.generate())
    with operator.client(operator.token("alice")) as c:
        r = upload(c, out.getvalue(), manifest())
        assert r.status_code == 201, r.text
        assert marker not in r.text
        assert marker not in c.get("/api/v1/apps").text
    operator.database.dispose()  # flush SQLite's WAL into its files
    needle = marker.encode()
    files = [p for p in operator.settings.data_dir.rglob("*") if p.is_file()]
    assert any(p.parent.parent == operator.settings.blobs_dir for p in files)
    for path in files:
        assert needle not in path.read_bytes(), path
    assert marker not in operator.dump()
    assert marker not in caplog.text
    assert "created for account alice" in caplog.text  # the API's own log was captured
