"""The console's pages, rendered from the REST API's bodies with :func:`~._html.html`.

Every function returns a whole document or a fragment as :class:`~._html.Html`;
nothing here reads a request or the database. The pages load one stylesheet and
one script, both from ``/console/static/``: no inline script or style (the
Content-Security-Policy forbids them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from confide.wire import DesiredState
from confide.wire.api import AppRecord, Plan, ProjectInfo

from .._db import IssuedToken, TokenInfo
from .._service import StatusChange
from ._html import Html, html, join

#: Where the console is mounted on the operator's API listener.
PREFIX: Final = "/console"
STATIC: Final = PREFIX + "/static"
NOTHING: Final = Html("")


def when(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _nav(account: str, csrf: str, current: str) -> Html:
    links = join(
        html(
            '<a href="{href}"{current}>{label}</a>',
            href=f"{PREFIX}{path}",
            label=label,
            current=Html(' aria-current="page"') if path == current else NOTHING,
        )
        for path, label in (
            ("/", "Apps"),
            ("/projects", "Projects and plans"),
            ("/tokens", "API tokens"),
        )
    )
    return html(
        '<header><a class="brand" href="{home}">Confide console</a><nav>{links}</nav>'
        '<form class="sign-out" method="post" action="{sign_out}">'
        '<span class="account">{account}</span>'
        '<input type="hidden" name="csrf" value="{csrf}">'
        '<button type="submit">Sign out</button></form></header>',
        home=f"{PREFIX}/",
        links=links,
        sign_out=f"{PREFIX}/sign-out",
        account=account,
        csrf=csrf,
    )


def document(title: str, body: Html, *, header: Html = NOTHING) -> Html:
    """A whole page: the console's stylesheet and script, and ``body`` under ``title``."""
    return html(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        "<title>{title} · Confide console</title>"
        '<link rel="icon" href="{static}/favicon.svg">'
        '<link rel="stylesheet" href="{static}/console.css">'
        '<script src="{static}/console.js" defer></script>'
        "</head><body>{header}<main><h1>{title}</h1>{body}</main></body></html>",
        title=title,
        static=STATIC,
        header=header,
        body=body,
    )


def signed_in(title: str, body: Html, *, account: str, csrf: str, current: str = "") -> Html:
    return document(title, body, header=_nav(account, csrf, current))


def sign_in(form_token: str, *, error: str | None = None) -> Html:
    problem = html('<p class="error" role="alert">{error}</p>', error=error) if error else NOTHING
    return document(
        "Sign in",
        html(
            "{problem}<p>Sign in with an API token of your account "
            "(<code>confide operator token create</code> gives one).</p>"
            '<form class="card" method="post" action="{action}">'
            '<input type="hidden" name="csrf" value="{csrf}">'
            '<label for="token">API token</label>'
            '<input id="token" name="token" type="password" autocomplete="off" required '
            'maxlength="64" placeholder="cfd_...">'
            '<button type="submit">Sign in</button></form>',
            problem=problem,
            action=f"{PREFIX}/sign-in",
            csrf=form_token,
        ),
    )


def _status(record: AppRecord) -> Html:
    return html('<span class="status status-{status}">{status}</span>', status=record.status.value)


def app_list(apps: Sequence[AppRecord]) -> Html:
    if not apps:
        return html(
            '<p class="empty">No apps yet: deploy one with <code>confide deploy</code>.</p>'
        )
    rows = join(
        html(
            '<tr><td><a class="app" href="{href}">{name}</a></td><td>{project}</td>'
            "<td>{status}</td><td>{domains}</td><td>{plan}</td><td>{created}</td></tr>",
            href=f"{PREFIX}/apps/{a.id}",
            name=a.name,
            project=a.project,
            status=_status(a),
            domains=join((html("<code>{d}</code>", d=d) for d in a.domains), "<br>"),
            plan=a.plan,
            created=when(a.created_at),
        )
        for a in apps
    )
    return html(
        '<table class="apps"><thead><tr><th>Name</th><th>Project</th><th>Status</th>'
        "<th>Domains</th><th>Plan</th><th>Created</th></tr></thead><tbody>{rows}</tbody></table>",
        rows=rows,
    )


def app_page(record: AppRecord, history: Sequence[StatusChange], log: str, log_offset: int) -> Html:
    actions = []
    if record.desired_state == DesiredState.RUN:
        actions.append(
            html(
                '<a class="button" href="{href}">Stop…</a>', href=f"{PREFIX}/apps/{record.id}/stop"
            )
        )
    actions.append(
        html(
            '<a class="button danger" href="{href}">Delete…</a>',
            href=f"{PREFIX}/apps/{record.id}/delete",
        )
    )
    detail = (
        html('<p class="detail">{d}</p>', d=record.status_detail)
        if record.status_detail
        else NOTHING
    )
    facts = join(
        html("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v)
        for k, v in (
            ("Id", html("<code>{i}</code>", i=record.id)),
            ("Project", record.project),
            ("Status", join([_status(record), detail])),
            (
                "Asked for",
                record.desired_state.value + (", then delete" if record.delete_requested else ""),
            ),
            ("Domains", join((html("<code>{d}</code>", d=d) for d in record.domains), "<br>")),
            ("Plan", record.plan),
            ("TEE", record.tee),
            ("TLS", record.tls.value),
            ("Application", html("<code>{a}</code>", a=record.application)),
            ("Expires", when(record.expires_at)),
            (
                "Package",
                html(
                    "<code>sha256:{h}</code> ({n} bytes)",
                    h=record.package.sha256.hex(),
                    n=record.package.size,
                ),
            ),
            (
                "Fingerprint",
                html('<code class="fingerprint">{f}</code>', f=record.operator_fingerprint.hex()),
            ),
        )
    )
    changes = join(
        html(
            "<tr><td>{at}</td><td>{status}</td><td>{detail}</td></tr>",
            at=when(c.at),
            status=c.status.value,
            detail=c.detail or "",
        )
        for c in history
    )
    launch = json.dumps(record.model_dump(mode="json", by_alias=True)["launch"], indent=2)
    follow = record.status.active
    return html(
        '<div class="actions">{actions}</div><dl class="facts">{facts}</dl>'
        "<h2>Log</h2>"
        '<p id="log-state" class="log-state">{log_state}</p>'
        '<pre id="log" class="log"{follow}>{log}</pre>'
        "<h2>Status history</h2>"
        '<table class="history"><thead><tr><th>At</th><th>Status</th><th>Detail</th></tr>'
        "</thead><tbody>{changes}</tbody></table>"
        "<h2>Launch manifest</h2>"
        "<p>What the fingerprint measures: <code>confide verify</code> checks that the "
        "enclave's quote holds it.</p>"
        '<pre class="manifest">{launch}</pre>',
        actions=join(actions),
        facts=facts,
        log_state="Following live…" if follow else "The app is not running: the log is complete.",
        follow=html(
            ' data-follow="{url}"', url=f"{PREFIX}/apps/{record.id}/log/events?offset={log_offset}"
        )
        if follow
        else NOTHING,
        log=log,
        changes=changes,
        launch=launch,
    )


def confirm(record: AppRecord, action: str, csrf: str) -> Html:
    """The confirmation step of a stop or a delete: a form that posts it."""
    what = {
        "stop": "The runtime is stopped; the app keeps its id and can be deleted later.",
        "delete": "The app is stopped if it runs, then deleted: this cannot be undone.",
    }[action]
    return html(
        '<div class="card confirm"><p>{verb} the app <strong>{name}</strong> '
        "(<code>{id}</code>)?</p><p>{what}</p>"
        '<form method="post" action="{action}">'
        '<input type="hidden" name="csrf" value="{csrf}">'
        '<button type="submit" class="{cls}" id="confirm">{verb}</button> '
        '<a class="button" href="{back}">Cancel</a></form></div>',
        verb=action.capitalize(),
        name=record.name,
        id=record.id,
        what=what,
        action=f"{PREFIX}/apps/{record.id}/{action}",
        csrf=csrf,
        cls="danger" if action == "delete" else "",
        back=f"{PREFIX}/apps/{record.id}",
    )


def projects_and_plans(projects: Sequence[ProjectInfo], plans: Sequence[Plan]) -> Html:
    project_rows = join(
        html(
            "<tr><td>{name}</td><td>{apps}</td><td>{created}</td></tr>",
            name=p.name,
            apps=p.apps,
            created=when(p.created_at),
        )
        for p in projects
    )
    plan_rows = join(
        html(
            "<tr><td>{name}</td><td>{memory} MiB</td><td>{cores}</td><td>{days} days</td></tr>",
            name=p.name,
            memory=p.memory_mib,
            cores=p.cores,
            days=p.max_lifetime_days,
        )
        for p in plans
    )
    return html(
        "<h2>Projects</h2>"
        '<table class="projects"><thead><tr><th>Name</th><th>Apps</th><th>Created</th></tr>'
        "</thead><tbody>{projects}</tbody></table>"
        "<h2>Plans</h2><p>What this operator offers; a manifest names one.</p>"
        '<table class="plans"><thead><tr><th>Name</th><th>Memory</th><th>Cores</th>'
        "<th>Longest life</th></tr></thead><tbody>{plans}</tbody></table>",
        projects=project_rows,
        plans=plan_rows,
    )


def tokens(found: Sequence[TokenInfo], current: int, csrf: str, issued: IssuedToken | None) -> Html:
    shown = NOTHING
    if issued is not None:
        shown = html(
            '<div class="card issued" role="status"><p>Token {id} was created. Copy it now: '
            "it is shown this once and never stored.</p>"
            '<p><code id="new-token">{token}</code></p></div>',
            id=issued.id,
            token=issued.token,
        )

    def row(t: TokenInfo) -> Html:
        if t.revoked_at is not None:
            state = html("revoked {at}", at=when(t.revoked_at))
        else:
            state = html(
                '<form method="post" action="{action}">'
                '<input type="hidden" name="csrf" value="{csrf}">'
                '<button type="submit" class="danger">Revoke</button></form>',
                action=f"{PREFIX}/tokens/{t.id}/revoke",
                csrf=csrf,
            )
        return html(
            "<tr><td>{id}{this}</td><td>{created}</td><td>{used}</td><td>{state}</td></tr>",
            id=t.id,
            this=" (this session's)" if t.id == current else "",
            created=when(t.created_at),
            used=when(t.last_used_at),
            state=state,
        )

    return html(
        "{shown}"
        '<form method="post" action="{create}">'
        '<input type="hidden" name="csrf" value="{csrf}">'
        '<button type="submit">Create a token</button></form>'
        '<table class="tokens"><thead><tr><th>Id</th><th>Created</th><th>Last used</th>'
        "<th>State</th></tr></thead><tbody>{rows}</tbody></table>",
        shown=shown,
        create=f"{PREFIX}/tokens",
        csrf=csrf,
        rows=join(row(t) for t in found),
    )


def refused(message: str) -> Html:
    return document("Refused", html('<p class="error" role="alert">{m}</p>', m=message))


def not_found(account: str | None = None, csrf: str | None = None) -> Html:
    """404: no such page, or (the same answer, on purpose) not the caller's."""
    return document(
        "Not found",
        html(
            '<p>No such page, or not yours. <a href="{home}">Back to your apps</a>.</p>',
            home=f"{PREFIX}/",
        ),
        header=_nav(account, csrf, "") if account is not None and csrf is not None else NOTHING,
    )
