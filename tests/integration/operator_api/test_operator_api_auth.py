"""Authentication comes before anything, and accounts never see each other's apps."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import starlette.formparsers

from confide.crypto import PackageKey, encrypt_package
from support.operator_api import (
    Operator,
    manifest,
    upload,
)

APP = "00000000-0000-4000-8000-000000000000"
PROTECTED = [
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/plans"),
    ("GET", "/api/v1/launch"),
    ("GET", "/api/v1/projects"),
    ("POST", "/api/v1/projects"),
    ("GET", "/api/v1/apps"),
    ("POST", "/api/v1/apps"),
    ("GET", f"/api/v1/apps/{APP}"),
    ("POST", f"/api/v1/apps/{APP}/stop"),
    ("DELETE", f"/api/v1/apps/{APP}"),
    ("GET", f"/api/v1/apps/{APP}/logs"),
    ("GET", f"/api/v1/apps/{APP}/metrics"),
    ("GET", "/api/v1/apps/not-even-a-uuid"),
]


def _bad_credentials(operator: Operator) -> dict[str, dict[str, str]]:
    revoked = operator.token("alice")
    with operator.client(revoked) as c:
        assert c.get("/api/v1/me").status_code == 200
        token_id = c.get("/api/v1/me").json()["token_id"]
    from confide.operator import revoke_token

    with operator.database.session() as s:
        revoke_token(s, token_id, now=operator.clock())
        s.commit()
    return {
        "no header": {},
        "bearer alone": {"Authorization": "Bearer"},
        "not a token": {"Authorization": "Bearer hello"},
        "unknown token": {"Authorization": "Bearer cfd_" + "A" * 43},
        "basic auth": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        "token without scheme": {"Authorization": revoked},
        "revoked token": {"Authorization": f"Bearer {revoked}"},
    }


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_protected_endpoint_needs_a_valid_token(
    operator: Operator, method: str, path: str
) -> None:
    for why, headers in _bad_credentials(operator).items():
        with operator.client() as c:
            r = c.request(method, path, headers=headers)
        assert r.status_code == 401, (why, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json() == {
            "detail": "a valid API token is required (Authorization: Bearer cfd_...)"
        }


def test_an_unauthenticated_upload_is_never_read(
    operator: Operator, app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spooled: list[object] = []
    real = tempfile.SpooledTemporaryFile

    def recording(*args: Any, **kwargs: Any) -> Any:
        spooled.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", recording)
    (app_dir / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    out = io.BytesIO()
    encrypt_package(app_dir, out, PackageKey.generate())
    big = out.getvalue()  # larger than the 1 MiB spooled in memory
    for headers in _bad_credentials(operator).values():
        with operator.client() as c:
            r = c.post(
                "/api/v1/apps",
                headers=headers,
                files={"package": ("app.pkg", big)},
                data={"manifest": "{}"},
            )
        assert r.status_code == 401
    assert spooled == []  # the body was not even parsed into a temporary file
    assert operator.blob_files() == []
    assert "apps:" not in operator.dump()
    # The same upload with a token is read (the recording works).
    with operator.client(operator.token("bob")) as c:
        assert upload(c, big).status_code == 201
    assert len(spooled) == 1 and len(operator.blob_files()) == 1


def test_accounts_see_only_their_own(operator: Operator, package: bytes) -> None:
    alice, bob = operator.token("alice"), operator.token("bob")
    with operator.client(alice) as c:
        app = upload(c, package, manifest(project="secret-project")).json()
    path = f"/api/v1/apps/{app['id']}"
    with operator.client(bob) as c:
        assert c.get("/api/v1/apps").json() == {"apps": []}
        assert c.get("/api/v1/projects").json() == []
        for method, suffix in [
            ("GET", ""),
            ("POST", "/stop"),
            ("DELETE", ""),
            ("GET", "/logs"),
            ("GET", "/logs?follow=true"),
            ("GET", "/metrics"),
        ]:
            r = c.request(method, path + suffix)
            assert r.status_code == 404, (method, suffix, r.text)
            assert r.json() == {"detail": f"no app {app['id']}"}
        # Same answer as for an app that does not exist at all.
        assert c.get(f"/api/v1/apps/{APP}").json() == {"detail": f"no app {APP}"}
        # Bob may use the same project name: projects are per account.
        assert upload(c, package, manifest(project="secret-project")).status_code == 201
    with operator.client(alice) as c:
        mine = c.get(path).json()
        assert (mine["desired_state"], mine["delete_requested"]) == ("run", False)
        assert [a["id"] for a in c.get("/api/v1/apps").json()["apps"]] == [app["id"]]
    assert operator.events.notified[:1] == [__import__("uuid").UUID(app["id"])]
    assert len(operator.events.notified) == 2  # bob's refused stop/delete told nobody


def test_tokens_are_per_account_and_last_use_is_kept(operator: Operator) -> None:
    a1, a2 = operator.token("alice"), operator.token("alice")
    with operator.client(a1) as c:
        me1 = c.get("/api/v1/me").json()
    with operator.client(a2) as c:
        me2 = c.get("/api/v1/me").json()
    assert me1["account"] == me2["account"] == "alice" and me1["token_id"] != me2["token_id"]
    from confide.operator import list_tokens

    with operator.database.session() as s:
        assert all(t.last_used_at == operator.clock() for t in list_tokens(s, "alice"))
    stored = operator.dump()
    assert a1 not in stored and a2 not in stored
