"""The operator console (``/console/``): sign-in, its pages, its actions, its sessions.

Through a real operator API server (SQLite and PostgreSQL), as a browser uses it:
forms, cookies and ``Origin``. The console reads through the REST API's service:
the tests compare what it shows with what the API answers. Attacks (CSRF,
escaping, framing, another account's app) are in tests/adversarial/test_console_attacks.py.
"""

from __future__ import annotations

import hashlib
import re
import uuid

from starlette.testclient import TestClient

from confide.operator import App, create_app, record_status
from confide.wire import AppStatus
from support.console import ConsoleUser, csrf_of
from support.operator_api import Operator, upload

HOURS_8 = 8 * 3600


def _deploy(operator: Operator, package: bytes, account: str = "alice") -> tuple[str, str]:
    token = operator.token(account)
    with operator.client(token) as c:
        created = upload(c, package)
        assert created.status_code == 201, created.text
        return token, created.json()["id"]


def _set_status(
    operator: Operator, app_id: str, status: AppStatus, detail: str | None = None
) -> None:
    with operator.database.session() as s:
        row = s.get(App, uuid.UUID(app_id))
        assert row is not None
        record_status(s, row, status, now=operator.clock(), detail=detail)
        s.commit()


def _set_cookie_header(headers: list[tuple[str, str]], name: str = "confide_console") -> str:
    found = [v for k, v in headers if k == "set-cookie"]
    session = [v for v in found if v.startswith(name + "=")]
    assert len(session) == 1, found
    return session[0]


def test_sign_in_gives_a_strict_expiring_cookie_and_stores_only_its_hash(
    operator: Operator,
) -> None:
    token = operator.token("alice")
    with ConsoleUser(operator.url) as user:
        assert user.page("/console/").headers["location"] == "/console/sign-in"
        answer = user.sign_in(token)
        assert answer.status_code == 303, answer.text
        cookie = _set_cookie_header(answer.headers.multi_items())
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes, cookie
        assert "samesite=strict" in cookie.lower()
        assert "path=/console" in cookie.lower()
        assert f"max-age={HOURS_8}" in cookie.lower()
        # Plain HTTP here (TLS ends in front of the API if at all): Secure would make the
        # browser drop it; over https it is set (test_the_cookie_is_secure_over_https).
        assert "secure" not in attributes
        session_id = cookie.split(";")[0].split("=", 1)[1]
        assert len(session_id) == 43
        rows = operator.dump()
        assert session_id not in rows
        assert hashlib.sha256(session_id.encode()).hexdigest() in rows
        apps = user.page("/console/")
        assert apps.status_code == 200 and "<h1>Apps</h1>" in apps.text
        assert "alice" in apps.text


def test_the_cookie_is_secure_and_host_only_over_https(operator: Operator) -> None:
    """Behind a TLS front end the request's scheme is https (ASGI ``scheme``): the cookies are
    Secure and ``__Host-`` named (Path=/, no Domain), and only those names are read, so a
    cookie of the plain name, as a sibling host could toss one, signs nobody in."""
    app = create_app(
        operator.settings, database=operator.database, clock=operator.clock, migrate=False
    )
    token = operator.token("alice")
    with TestClient(app, base_url="https://console.example") as client:
        form = client.get("/console/sign-in")
        sign_in_cookie = form.headers["set-cookie"]
        assert sign_in_cookie.startswith("__Host-confide_console_sign_in="), sign_in_cookie
        assert "; secure" in sign_in_cookie.lower() and "; path=/;" in sign_in_cookie.lower()
        answer = client.post(
            "/console/sign-in",
            data={"csrf": csrf_of(form.text), "token": token},
            headers={"Origin": "https://console.example"},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        session_cookie = _set_cookie_header(answer.headers.multi_items(), "__Host-confide_console")
        attributes = [a.strip().lower() for a in session_cookie.split(";")[1:]]
        assert "secure" in attributes and "path=/" in attributes, session_cookie
        assert not any(a.startswith("domain") for a in attributes), session_cookie
        session_id = session_cookie.split(";")[0].split("=", 1)[1]
        assert client.get("/console/", follow_redirects=False).status_code == 200

        client.cookies.clear()
        client.cookies.set("confide_console", session_id)
        tossed = client.get("/console/", follow_redirects=False)
        assert tossed.status_code == 303, "a plain-named cookie must not sign in over https"
        assert tossed.headers["location"] == "/console/sign-in"


def test_behind_a_tls_front_end_the_cookies_are_host_only_too(operator: Operator) -> None:
    """Review (ADR 0025): the API listens in plain HTTP, so behind the TLS front end that
    serves it over https every request's scheme is ``http``: the cookies were plain-named and
    not Secure there, open to a sibling app's tossing (and sent over http). With
    ``console_https`` they are ``__Host-`` and Secure, the browser's https Origin is the
    console's own, and only the prefixed names are read."""
    settings = operator.settings.with_overrides(console_https=True)
    app = create_app(settings, database=operator.database, clock=operator.clock, migrate=False)
    token = operator.token("alice")
    with TestClient(app, base_url="http://console.example") as client:  # as the listener sees
        form = client.get("/console/sign-in")
        sign_in_cookie = form.headers["set-cookie"]
        assert sign_in_cookie.startswith("__Host-confide_console_sign_in="), sign_in_cookie
        attributes = [a.strip().lower() for a in sign_in_cookie.split(";")[1:]]
        assert "secure" in attributes and "path=/" in attributes, sign_in_cookie
        form_token = sign_in_cookie.split(";")[0].split("=", 1)[1]
        client.cookies.clear()  # a Secure cookie: the browser sends it over https only
        answer = client.post(
            "/console/sign-in",
            data={"csrf": csrf_of(form.text), "token": token},
            headers={
                "Origin": "https://console.example",
                "Cookie": f"__Host-confide_console_sign_in={form_token}",
            },
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        session_cookie = _set_cookie_header(answer.headers.multi_items(), "__Host-confide_console")
        assert "secure" in [a.strip().lower() for a in session_cookie.split(";")[1:]]
        session_id = session_cookie.split(";")[0].split("=", 1)[1]
        client.cookies.clear()
        signed_in = client.get(
            "/console/",
            headers={"Cookie": f"__Host-confide_console={session_id}"},
            follow_redirects=False,
        )
        assert signed_in.status_code == 200
        tossed = client.get(
            "/console/", headers={"Cookie": f"confide_console={session_id}"}, follow_redirects=False
        )
        assert tossed.status_code == 303, "a plain-named cookie must not sign in"
    # Guard: without the setting, plain HTTP stays as it was (loopback, tests).
    plain = create_app(
        operator.settings, database=operator.database, clock=operator.clock, migrate=False
    )
    with TestClient(plain, base_url="http://console.example") as client:
        cookie = client.get("/console/sign-in").headers["set-cookie"]
        assert cookie.startswith("confide_console_sign_in="), cookie


def test_a_wrong_token_does_not_sign_in(operator: Operator) -> None:
    operator.token("alice")
    with ConsoleUser(operator.url) as user:
        for wrong in ["", "cfd_" + "A" * 43, "not a token"]:
            answer = user.sign_in(wrong)
            assert answer.status_code == 401
            assert "not a valid API token" in answer.text
            assert not any(
                v.startswith("confide_console=")
                for k, v in answer.headers.multi_items()
                if k == "set-cookie"
            )
        assert user.page("/console/").status_code == 303


def test_the_pages_show_what_the_api_answers(operator: Operator, package: bytes) -> None:
    token, app_id = _deploy(operator, package)
    _set_status(operator, app_id, AppStatus.INITIALIZING)
    log = operator.settings.logs_dir / f"{app_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("waiting for the configuration\n")
    with operator.client(token) as api:
        record = api.get(f"/api/v1/apps/{app_id}").json()
    with ConsoleUser(operator.url).signed_in(token) as user:
        apps = user.page("/console/").text
        assert f'href="/console/apps/{app_id}"' in apps
        for shown in (record["name"], record["project"], "initializing", *record["domains"]):
            assert shown in apps
        page = user.page(f"/console/apps/{app_id}")
        assert page.status_code == 200
        assert record["fingerprint"] in page.text
        assert record["launch"]["runtime_sha256"] in page.text
        assert re.search(r"<td>[^<]*</td><td>spawning</td>", page.text)
        assert re.search(r"<td>[^<]*</td><td>initializing</td>", page.text)
        assert "waiting for the configuration" in page.text
        offset = len("waiting for the configuration\n")
        assert f'data-follow="/console/apps/{app_id}/log/events?offset={offset}"' in page.text
        projects = user.page("/console/projects").text
        assert "<td>demo</td><td>1</td>" in projects
        for plan in operator.settings.plans:
            assert f"<td>{plan.name}</td><td>{plan.memory_mib} MiB</td>" in projects


def test_stop_and_delete_go_through_a_confirmation(operator: Operator, package: bytes) -> None:
    token, app_id = _deploy(operator, package)
    with ConsoleUser(operator.url).signed_in(token) as user, operator.client(token) as api:
        confirm = user.page(f"/console/apps/{app_id}/stop")
        assert confirm.status_code == 200
        assert f'action="/console/apps/{app_id}/stop"' in confirm.text
        assert api.get(f"/api/v1/apps/{app_id}").json()["desired_state"] == "run"  # not yet
        stopped = user.submit(f"/console/apps/{app_id}/stop", f"/console/apps/{app_id}/stop")
        assert stopped.status_code == 303
        assert stopped.headers["location"] == f"/console/apps/{app_id}"
        assert api.get(f"/api/v1/apps/{app_id}").json()["desired_state"] == "stop"
        assert uuid.UUID(app_id) in operator.events.notified
        # Stopped: no stop button any more, a delete one still.
        page = user.page(f"/console/apps/{app_id}").text
        assert f"/console/apps/{app_id}/stop" not in page
        deleted = user.submit(f"/console/apps/{app_id}/delete", f"/console/apps/{app_id}/delete")
        assert deleted.status_code == 303 and deleted.headers["location"] == "/console/"
        # Still spawning: deleted once the supervisor stopped it (as through the API).
        assert api.get(f"/api/v1/apps/{app_id}").json()["delete_requested"] is True
        assert ", then delete" in user.page(f"/console/apps/{app_id}").text


def test_tokens_are_shown_once_and_revoked(operator: Operator) -> None:
    token = operator.token("alice")
    with ConsoleUser(operator.url).signed_in(token) as user:
        created = user.submit("/console/tokens", "/console/tokens")
        assert created.status_code == 200
        found = re.search(r'<code id="new-token">(cfd_[A-Za-z0-9_-]{43})</code>', created.text)
        assert found is not None, created.text
        new = found.group(1)
        assert created.headers["cache-control"] == "no-store"
        with operator.client(new) as api:
            assert api.get("/api/v1/me").json()["account"] == "alice"
            listing = user.page("/console/tokens").text
            assert new not in listing  # shown once
            token_id = api.get("/api/v1/me").json()["token_id"]
            assert f'action="/console/tokens/{token_id}/revoke"' in listing
            revoked = user.submit("/console/tokens", f"/console/tokens/{token_id}/revoke")
            assert revoked.status_code == 303
            assert api.get("/api/v1/me").status_code == 401
        assert "revoked" in user.page("/console/tokens").text


def test_a_session_expires(operator: Operator) -> None:
    token = operator.token("alice")
    with ConsoleUser(operator.url).signed_in(token) as user:
        operator.clock.advance(HOURS_8 - 1)
        assert user.page("/console/").status_code == 200
        operator.clock.advance(1)
        expired = user.page("/console/")
        assert expired.status_code == 303 and expired.headers["location"] == "/console/sign-in"
        assert user.page("/console/tokens").status_code == 303


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(operator: Operator) -> None:
    token = operator.token("alice")
    with ConsoleUser(operator.url).signed_in(token) as user, ConsoleUser(operator.url) as thief:
        stolen = user.http.cookies.get("confide_console", path="/console")
        assert stolen is not None
        thief.http.cookies.set("confide_console", stolen, path="/console")
        assert thief.page("/console/").status_code == 200  # guard: the copy works until...
        out = user.submit("/console/", "/console/sign-out")
        assert out.status_code == 303 and out.headers["location"] == "/console/sign-in"
        assert 'confide_console=""' in out.headers["set-cookie"]
        assert thief.page("/console/").status_code == 303  # ...the session is over
        assert user.page("/console/").status_code == 303


def test_revoking_the_token_ends_its_sessions(operator: Operator) -> None:
    token = operator.token("alice")
    with ConsoleUser(operator.url).signed_in(token) as user, operator.client(token) as api:
        token_id = api.get("/api/v1/me").json()["token_id"]
        assert (
            user.submit("/console/tokens", f"/console/tokens/{token_id}/revoke").status_code == 303
        )
        assert user.page("/console/").status_code == 303


def test_the_log_follows_live_until_the_app_stops(operator: Operator, package: bytes) -> None:
    token, app_id = _deploy(operator, package)
    _set_status(operator, app_id, AppStatus.RUNNING)
    log = operator.settings.logs_dir / f"{app_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("old line\n")
    events: list[str] = []
    with ConsoleUser(operator.url).signed_in(token) as user:
        url = f"/console/apps/{app_id}/log/events?offset={len('old line' + chr(10))}"
        with user.http.stream("GET", url) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                events.append(line)
                if line == "retry: 2000":
                    with log.open("a") as f:
                        f.write("new <b>line</b>\npart")
                elif line == "data: new <b>line</b>":
                    with log.open("a") as f:
                        f.write("ial\n")
                elif line == "data: partial":
                    _set_status(operator, app_id, AppStatus.STOPPED)
        end = len("old line\nnew <b>line</b>\npartial\n")
        assert events == [
            "retry: 2000",
            "",
            f"id: {len('old line' + chr(10) + 'new <b>line</b>' + chr(10))}",
            "data: new <b>line</b>",
            "",
            f"id: {end}",
            "data: partial",
            "",
            "event: end",
            "data: stopped",
            "",
        ]
        # A reconnecting browser goes on from its last event's id.
        again = user.http.get(url, headers={"Last-Event-ID": str(end)})
        assert "data: partial" not in again.text and "event: end" in again.text


def test_signing_out_ends_a_log_follower(operator: Operator, package: bytes) -> None:
    token, app_id = _deploy(operator, package)
    _set_status(operator, app_id, AppStatus.RUNNING)
    events: list[str] = []
    with ConsoleUser(operator.url).signed_in(token) as user:
        with user.http.stream("GET", f"/console/apps/{app_id}/log/events") as stream:
            for line in stream.iter_lines():
                events.append(line)
                if line == "retry: 2000":
                    assert user.submit("/console/", "/console/sign-out").status_code == 303
        assert events[-3:] == ["event: end", "data: signed-out", ""]
        # Signed out, a new follower is refused before it starts.
        assert user.page(f"/console/apps/{app_id}/log/events").status_code == 401
