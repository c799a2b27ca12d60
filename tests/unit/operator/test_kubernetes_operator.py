"""``GET /api/v1/blobs/<sha256>``: what the Kubernetes backend's pods fetch (ADR 0007)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from confide.errors import UsageError
from confide.operator import (
    App,
    BlobStore,
    Database,
    OperatorSettings,
    create_app,
    upgrade_database,
)
from confide.operator._settings import KubernetesSettings
from confide.wire import API_PREFIX
from support.operator_flow import add_app

PACKAGE = b"CONFIDEP encrypted bytes"
K8S = KubernetesSettings(
    namespace="apps", image="img", operator_id="op", blob_url="http://op:8080/api/v1/blobs"
)


def client(tmp_path: Path, kubernetes: KubernetesSettings | None) -> TestClient:
    settings = OperatorSettings.load(tmp_path, runtime_sha256=bytes(32), kubernetes=kubernetes)
    blobs = BlobStore(settings.blobs_dir)
    blob = blobs.put(io.BytesIO(PACKAGE), limit=1024)
    database = Database.open(settings.database_url)
    upgrade_database(database)
    app_id = add_app(database)  # a live app of that package: only those are served
    with database.session() as s:
        s.execute(update(App).where(App.id == app_id).values(package_sha256=blob.sha256_hex))
        s.commit()
    return TestClient(create_app(settings, database=database, blobs=blobs))


@pytest.mark.parametrize(
    ("name", "code"),
    [
        (hashlib.sha256(PACKAGE).hexdigest(), 200),
        (hashlib.sha256(b"other").hexdigest(), 404),
        (hashlib.sha256(PACKAGE).hexdigest().upper(), 404),
        ("../../operator.db", 404),
        ("ab" * 31, 404),
    ],
)
def test_blobs_by_digest_with_kubernetes(tmp_path: Path, name: str, code: int) -> None:
    with client(tmp_path, K8S) as c:
        answer = c.get(f"{API_PREFIX}/blobs/{name}")
    assert answer.status_code == code
    if code == 200:
        assert answer.content == PACKAGE


def test_no_blobs_without_kubernetes(tmp_path: Path) -> None:
    with client(tmp_path, None) as c:
        answer = c.get(f"{API_PREFIX}/blobs/{hashlib.sha256(PACKAGE).hexdigest()}")
    assert answer.status_code in (401, 404)
    assert answer.content != PACKAGE


def test_the_kubernetes_table_is_read(tmp_path: Path) -> None:
    (tmp_path / "operator.toml").write_text(
        '[kubernetes]\nnamespace = "apps"\nimage = "img"\noperator_id = "op"\n'
        'blob_url = "http://op:8080/api/v1/blobs"\nsimulation_claim = "sim"\n'
    )
    settings = OperatorSettings.load(tmp_path, runtime_sha256=bytes(32))
    assert settings.kubernetes == KubernetesSettings(
        "apps", "img", "op", "http://op:8080/api/v1/blobs", simulation_claim="sim"
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('namespace = "apps"', "needs namespace, image"),
        ('namespace = "apps"\nimage = "i"\noperator_id = "op"\nblob_url = "x"', "http"),
        ('namespace = "Apps"\nimage = "i"\noperator_id = "op"\nblob_url = "http://o"', "DNS"),
        ('nmespace = "apps"', "keys are"),
        ("namespace = 3", "strings"),
    ],
)
def test_a_bad_kubernetes_table_is_refused(tmp_path: Path, table: str, message: str) -> None:
    (tmp_path / "operator.toml").write_text(f"[kubernetes]\n{table}\n")
    with pytest.raises(UsageError, match=message):
        OperatorSettings.load(tmp_path, runtime_sha256=bytes(32))
