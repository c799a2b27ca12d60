"""Attacks on the operator console from a hostile web (ADR 0025).

- stored XSS: an app's name, status detail, project and log lines are an owner's or an
  app's words; they must reach every page as text, never as markup;
- CSRF: another site's page makes the signed-in browser post a console form (stop an
  app); without the session's token, or from another origin, nothing happens;
- login CSRF: another site signs the browser in to the attacker's account;
- another account's app: the same 404 as no app, on every page and action;
- clickjacking and sniffing: every answer forbids framing, inline script and guessing.

Each refusal has a guard: the same request, done right, succeeds.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from confide.operator import App, Project, record_status
from confide.wire import AppStatus
from support.console import ConsoleUser, csrf_of
from support.operator_api import Operator, OperatorFactory, StaticCa, upload

PAYLOADS: Final = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "'><svg onload=alert(3)>",
)
#: The console's only script element.
OWN_SCRIPT: Final = '<script src="/console/static/console.js" defer></script>'


@pytest.fixture(name="operator")
def operator_fixture(tmp_path: Path, database_url: str) -> Iterator[Operator]:
    factory = OperatorFactory(tmp_path, database_url)
    try:
        yield factory.start(ca_provider=StaticCa())
    finally:
        factory.close()


@pytest.fixture(name="package")
def package_fixture(tmp_path: Path) -> bytes:
    import io

    from confide.crypto import PackageKey, encrypt_package

    root = tmp_path / "app"
    root.mkdir()
    (root / "app.py").write_text("async def app(scope, receive, send):\n    pass\n")
    out = io.BytesIO()
    encrypt_package(root, out, PackageKey.generate())
    return out.getvalue()


def _deploy(operator: Operator, token: str, package: bytes) -> str:
    with operator.client(token) as c:
        created = upload(c, package)
        assert created.status_code == 201, created.text
        app_id: str = created.json()["id"]
        return app_id


def _desired(operator: Operator, token: str, app_id: str) -> str:
    with operator.client(token) as c:
        state: str = c.get(f"/api/v1/apps/{app_id}").json()["desired_state"]
        return state


def test_hostile_words_render_as_text(operator: Operator, package: bytes) -> None:
    """The API refuses such names; a row that holds them anyway (a validation bug, an older
    schema) and a log written by the app still render inert."""
    token = operator.token("alice")
    app_id = _deploy(operator, token, package)
    name, detail, project = PAYLOADS
    with operator.database.session() as s:
        row = s.get(App, uuid.UUID(app_id))
        assert row is not None
        row.name = name
        s.get_one(Project, row.project_id).name = project
        record_status(s, row, AppStatus.ON_ERROR, now=operator.clock(), detail=detail)
        s.commit()
    log = operator.settings.logs_dir / f"{app_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"{p}\n" for p in PAYLOADS))
    with ConsoleUser(operator.url).signed_in(token) as user:
        for path in (
            "/console/",
            f"/console/apps/{app_id}",
            f"/console/apps/{app_id}/stop",
            f"/console/apps/{app_id}/delete",
            "/console/projects",
        ):
            page = user.page(path)
            assert page.status_code == 200, path
            for payload in PAYLOADS:
                assert payload not in page.text, (path, payload)
            assert page.text.count("<script") == 1 and OWN_SCRIPT in page.text, path
            assert "<img" not in page.text and "<svg" not in page.text, path
        # Guard against a vacuous pass: the words are there, as text.
        app_page = user.page(f"/console/apps/{app_id}").text
        for payload in PAYLOADS:
            escaped = payload.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            escaped = escaped.replace('"', "&quot;").replace("'", "&#x27;")
            assert escaped in app_page, payload


def test_a_form_without_the_sessions_csrf_token_changes_nothing(
    operator: Operator, package: bytes
) -> None:
    token = operator.token("alice")
    app_id = _deploy(operator, token, package)
    stop = f"/console/apps/{app_id}/stop"
    with (
        ConsoleUser(operator.url).signed_in(token) as user,
        ConsoleUser(operator.url).signed_in(operator.token("mallory")) as attacker,
    ):
        theirs = csrf_of(attacker.page("/console/").text)
        ours = csrf_of(user.page(stop).text)
        for fields, origin, site in [
            ({}, "null", "same-origin"),  # no token
            ({"csrf": ""}, "null", "same-origin"),
            ({"csrf": "0" * 64}, "own", "same-origin"),  # a wrong one
            ({"csrf": theirs}, "null", "same-origin"),  # another session's
            # The session's token, but posted from another site, as the browser tells:
            ({"csrf": ours}, "https://attacker.example", "cross-site"),
            ({"csrf": ours}, "https://attacker.example", None),
            ({"csrf": ours}, "null", "cross-site"),  # a no-referrer page elsewhere
            ({"csrf": ours}, "null", "same-site"),  # a sibling subdomain
            ({"csrf": ours}, "own", "cross-site"),
            ({"csrf": ours}, "null", None),  # neither header says where from
            ({"csrf": ours}, None, None),
        ]:
            refused = user.post(stop, fields, origin=origin, fetch_site=site)
            assert refused.status_code == 403, (fields, origin, site)
            assert _desired(operator, token, app_id) == "run", (fields, origin, site)
        # The same refusals for the other forms.
        for action in (f"/console/apps/{app_id}/delete", "/console/tokens", "/console/sign-out"):
            assert user.post(action, {"csrf": theirs}).status_code == 403, action
        assert user.page("/console/").status_code == 200  # not signed out
        with operator.client(token) as api:
            assert not api.get(f"/api/v1/apps/{app_id}").json()["delete_requested"]
        # Guard: with the session's own token, from the console's page, it is stopped: as
        # Chromium posts it (Origin null, Sec-Fetch-Site) and as a browser stating Origin.
        assert user.post(stop, {"csrf": ours}, origin="own", fetch_site=None).status_code == 303
        assert user.post(stop, {"csrf": ours}).status_code == 303
        assert _desired(operator, token, app_id) == "stop"


def test_another_site_cannot_sign_the_browser_in(operator: Operator) -> None:
    """Login CSRF: the sign-in form needs its own cookie's token and the console's Origin."""
    attacker_token = operator.token("mallory")
    with ConsoleUser(operator.url) as victim:
        # The attacker's page posts a sign-in: the victim's browser has no sign-in cookie.
        forged = victim.post("/console/sign-in", {"csrf": "A" * 43, "token": attacker_token})
        assert forged.status_code == 403
        form = csrf_of(victim.page("/console/sign-in").text)
        for origin, site in [("https://attacker.example", "cross-site"), ("null", "cross-site")]:
            cross = victim.post(
                "/console/sign-in",
                {"csrf": form, "token": attacker_token},
                origin=origin,
                fetch_site=site,
            )
            assert cross.status_code == 403
        assert victim.page("/console/").status_code == 303  # still signed out
        # Guard: the console's own form, from its own origin, signs in.
        form = csrf_of(victim.page("/console/sign-in").text)
        assert (
            victim.post("/console/sign-in", {"csrf": form, "token": attacker_token}).status_code
            == 303
        )


def test_another_accounts_app_is_not_found(operator: Operator, package: bytes) -> None:
    alice = operator.token("alice")
    app_id = _deploy(operator, alice, package)
    with ConsoleUser(operator.url).signed_in(operator.token("mallory")) as mallory:
        csrf = csrf_of(mallory.page("/console/").text)
        for path in (
            f"/console/apps/{app_id}",
            f"/console/apps/{app_id}/stop",
            f"/console/apps/{app_id}/delete",
            f"/console/apps/{app_id}/log/events",
            f"/console/apps/{uuid.uuid4()}",  # the same answer as no app at all
            "/console/apps/not-a-uuid",
        ):
            assert mallory.page(path).status_code == 404, path
        for path in (f"/console/apps/{app_id}/stop", f"/console/apps/{app_id}/delete"):
            assert mallory.post(path, {"csrf": csrf}).status_code == 404, path
        assert app_id not in mallory.page("/console/").text
        with operator.client(alice) as api:
            alices_token = api.get("/api/v1/me").json()["token_id"]
            revoke = f"/console/tokens/{alices_token}/revoke"
            assert mallory.post(revoke, {"csrf": csrf}).status_code == 404
            assert api.get("/api/v1/me").status_code == 200  # not revoked
        assert _desired(operator, alice, app_id) == "run"
    # Guard: alice sees it.
    with ConsoleUser(operator.url).signed_in(alice) as user:
        assert user.page(f"/console/apps/{app_id}").status_code == 200


def test_every_answer_forbids_framing_inline_script_and_sniffing(operator: Operator) -> None:
    token = operator.token("alice")
    with ConsoleUser(operator.url).signed_in(token) as user:
        for path, cached in [
            ("/console/", False),
            ("/console/sign-in", False),
            ("/console/tokens", False),
            ("/console/no-such-page", False),
            ("/console/static/console.js", True),
            ("/console/static/console.css", True),
        ]:
            answer = user.page(path)
            headers = answer.headers
            csp = {d.strip() for d in headers["content-security-policy"].split(";")}
            assert {
                "default-src 'none'",
                "script-src 'self'",
                "style-src 'self'",
                "img-src 'self'",
                "form-action 'self'",
                "frame-ancestors 'none'",
                "base-uri 'none'",
            } <= csp, path
            assert not any("unsafe" in d for d in csp), path
            assert headers["x-frame-options"] == "DENY", path
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["referrer-policy"] == "no-referrer", path
            assert (headers.get("cache-control") == "no-store") is not cached, path
        assert (
            user.page("/console/static/console.js")
            .headers["content-type"]
            .startswith("text/javascript")
        )
        # No inline script or style: every page's markup holds none.
        page = user.page("/console/tokens").text
        assert "<style" not in page and " style=" not in page
        assert re.search(r"<[^>]*\son[a-z]+\s*=", page, re.IGNORECASE) is None
