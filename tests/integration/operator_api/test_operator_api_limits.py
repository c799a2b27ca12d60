"""The package size limit (413) and the apps-per-account limit (409)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from support.operator_api import (
    OperatorFactory,
    manifest,
    upload,
)

LIMIT = 64 * 1024
#: What the API allows on top of the package for the manifest and multipart framing.
OVERHEAD = 128 * 1024 + 64 * 1024


def _tmp_files(operators: OperatorFactory) -> list[str]:
    tmp = operators.tmp_path / "data" / "blobs" / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def test_a_package_over_the_limit_is_413_and_not_stored(
    operators: OperatorFactory, package: bytes
) -> None:
    limit = len(package)
    operator = operators.start(max_package_size=limit)
    with operator.client(operator.token("alice")) as c:
        assert upload(c, package, manifest(name="exact")).status_code == 201
        # Declared too large (Content-Length): refused before reading.
        r = upload(c, b"x" * (limit + OVERHEAD + 1))
        assert r.status_code == 413, r.text
        assert f"limit of {limit} bytes" in r.json()["detail"]
        # Within the framing allowance: read, then refused before it is stored.
        r = upload(c, package + b"x")
        assert r.status_code == 413, r.text
    assert len(operator.blob_files()) == 1 and _tmp_files(operators) == []
    assert operator.dump().count("apps:") == 1


def test_a_chunked_upload_is_cut_off_at_the_limit(operators: OperatorFactory) -> None:
    operator = operators.start(max_package_size=LIMIT)
    boundary = "b0undary"
    sent: list[int] = []

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="manifest"\r\n\r\n'
            f"{json.dumps(manifest())}\r\n--{boundary}\r\n"
            'Content-Disposition: form-data; name="package"; filename="p"\r\n\r\n'
        ).encode()
        for _ in range(64):  # 4 MiB, far more than allowed, with no Content-Length
            sent.append(1)
            yield b"x" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    with operator.client(operator.token("alice")) as c:
        r = c.post(
            "/api/v1/apps",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    assert r.status_code == 413, r.text
    assert operator.blob_files() == [] and "apps:" not in operator.dump()


def test_apps_per_account(operators: OperatorFactory, package: bytes) -> None:
    operator = operators.start(max_apps_per_account=2)
    alice, bob = operator.token("alice"), operator.token("bob")
    with operator.client(alice) as c:
        first = upload(c, package, manifest(name="one")).json()
        assert upload(c, package, manifest(name="two")).status_code == 201
        r = upload(c, package, manifest(name="three"))
        assert r.status_code == 409 and "already has 2 apps" in r.json()["detail"]
        # Deleting one makes room.
        from confide.operator import (
            App,
            record_status,
        )
        from confide.wire import AppStatus

        with operator.database.session() as s:
            import uuid

            row = s.get(App, uuid.UUID(first["id"]))
            assert row is not None
            record_status(s, row, AppStatus.STOPPED, now=operator.clock())
            s.commit()
        assert c.delete(f"/api/v1/apps/{first['id']}").json()["status"] == "deleted"
        assert upload(c, package, manifest(name="three")).status_code == 201
        assert c.get("/api/v1/me").json()["apps"] == 2
    with operator.client(bob) as c:  # the limit is per account
        assert upload(c, package).status_code == 201
