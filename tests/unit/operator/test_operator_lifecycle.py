"""The app lifecycle: its docstring draws its table, and only the table's moves are written."""

from __future__ import annotations

import ast
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

import confide.operator._lifecycle as lifecycle
from confide.errors import LifecycleError
from confide.operator import (
    TRANSITIONS,
    App,
    AppStatusChange,
    record_status,
    request_delete,
    request_stop,
)
from confide.wire import AppStatus, DesiredState

NOW = datetime(2031, 1, 1, tzinfo=UTC)
_ARROW = re.compile(r"^\s+(\w+)\s+──▶\s+(\w+)\b")
PAIRS = [(a, b) for a in [None, *AppStatus] for b in AppStatus]
LEGAL = [(a, b) for a, b in PAIRS if b in TRANSITIONS[a]]
ILLEGAL = [(a, b) for a, b in PAIRS if b not in TRANSITIONS[a]]


def _name(status: AppStatus | None) -> str:
    return "new" if status is None else status.value


def _drawn() -> set[tuple[str, str]]:
    lines = (lifecycle.__doc__ or "").splitlines()
    return {(m[1], m[2]) for m in map(_ARROW.match, lines) if m}


def _app(status: AppStatus | None) -> App:
    return App(
        id=uuid.uuid4(),
        status=None if status is None else status.value,
        status_detail="before",
        desired_state=DesiredState.RUN.value,
        delete_requested=False,
        updated_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


def _history(session: Session) -> list[AppStatusChange]:
    return [o for o in session.new if isinstance(o, AppStatusChange)]


def test_the_docstring_draws_exactly_the_table() -> None:
    table = {(_name(a), b.value) for a, b in LEGAL}
    assert len(table) > 10  # the drawing was found
    assert _drawn() == table
    assert set(TRANSITIONS) == {None, *AppStatus}


def test_the_table_keeps_the_rules_of_the_supervisor() -> None:
    active = {s for s in AppStatus if s.active}
    assert TRANSITIONS[None] == {AppStatus.SPAWNING}
    assert TRANSITIONS[AppStatus.DELETED] == set()
    for status in AppStatus:
        if not status.active:
            # Once out of the active statuses an app never comes back; deletion is its only move.
            assert not TRANSITIONS[status] & active, status
        if status not in (AppStatus.DELETED,) and not status.active:
            assert TRANSITIONS[status] == {AppStatus.DELETED}, status
    for status in active:
        # Nothing is deleted while it may still run: it is stopped first.
        assert AppStatus.DELETED not in TRANSITIONS[status], status
        assert {AppStatus.STOPPED, AppStatus.EXPIRED, AppStatus.ON_ERROR} <= TRANSITIONS[status]


@pytest.mark.parametrize(("source", "target"), LEGAL, ids=lambda s: _name(s))
def test_a_legal_move_is_written_with_its_history(
    source: AppStatus | None, target: AppStatus
) -> None:
    app, session = _app(source), Session()
    record_status(session, app, target, now=NOW, detail="why")
    assert (app.status, app.status_detail, app.updated_at) == (target.value, "why", NOW)
    [change] = _history(session)
    assert (change.app_id, change.status, change.detail, change.at) == (
        app.id,
        target.value,
        "why",
        NOW,
    )


@pytest.mark.parametrize(("source", "target"), ILLEGAL, ids=lambda s: _name(s))
def test_an_illegal_move_raises_and_writes_nothing(
    source: AppStatus | None, target: AppStatus
) -> None:
    app, session = _app(source), Session()
    with pytest.raises(LifecycleError) as err:
        record_status(session, app, target, now=NOW)
    assert f"from {_name(source)} to {target.value}" in err.value.message
    assert err.value.code == "lifecycle"
    assert app.status == (None if source is None else source.value)
    assert app.status_detail == "before" and _history(session) == []


def test_both_tables_are_not_vacuous() -> None:
    assert len(LEGAL) >= 15 and len(ILLEGAL) >= 30
    assert len(LEGAL) + len(ILLEGAL) == 8 * 7


def test_a_stop_request_changes_no_status() -> None:
    app, session = _app(AppStatus.RUNNING), Session()
    request_stop(app, now=NOW)
    assert (app.desired_state, app.delete_requested, app.status) == ("stop", False, "running")
    assert app.updated_at == NOW and _history(session) == []


@pytest.mark.parametrize("status", list(AppStatus), ids=str)
def test_a_delete_request_deletes_at_once_only_what_does_not_run(status: AppStatus) -> None:
    app, session = _app(status), Session()
    if status == AppStatus.DELETED:
        with pytest.raises(LifecycleError):  # the API answers 404 for a deleted app first
            request_delete(session, app, now=NOW)
        return
    request_delete(session, app, now=NOW)
    assert (app.desired_state, app.delete_requested) == ("stop", True)
    if status.active:
        assert app.status == status.value and _history(session) == []
    else:
        assert (app.status, app.status_detail) == ("deleted", "deleted by owner")
        assert [c.status for c in _history(session)] == ["deleted"]


_LIFECYCLE_FIELDS = {"status", "desired_state", "delete_requested"}
_OPERATOR = Path(lifecycle.__file__).parent


def _writes(tree: ast.AST) -> list[str]:
    """Assignments to an app's lifecycle fields, and inserts or updates that set them."""
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = [t for target in node.targets for t in _flat(target)]
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        found += [
            ast.unparse(t)
            for t in targets
            if isinstance(t, ast.Attribute) and t.attr in _LIFECYCLE_FIELDS
        ]
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in {
            "App",
            "values",
        }:
            found += [
                f"{ast.unparse(node.func)}({k.arg}=...)"
                for k in node.keywords
                if k.arg in _LIFECYCLE_FIELDS
            ]
    return found


def _flat(target: ast.expr) -> list[ast.expr]:
    return [t for e in target.elts for t in _flat(e)] if isinstance(target, ast.Tuple) else [target]


def test_only_the_lifecycle_writes_status_desired_state_and_deletion() -> None:
    modules = sorted(p for p in _OPERATOR.glob("*.py") if p.name != "_lifecycle.py")
    assert len(modules) > 10  # the operator's modules were found
    writes = {p.name: _writes(ast.parse(p.read_text())) for p in modules}
    # The supervisor's memory of the status it recorded (``_Tracked``) is no row.
    assert {name: w for name, w in writes.items() if w} == {
        "_supervisor.py": ["t.status"] * len(writes["_supervisor.py"])
    }
    # The guard sees writes where they are.
    assert _writes(ast.parse((_OPERATOR / "_lifecycle.py").read_text()))


def test_the_service_knows_nothing_of_http() -> None:
    tree = ast.parse((_OPERATOR / "_service.py").read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    }
    assert "sqlalchemy" in imported  # the imports were read
    assert not imported & {"fastapi", "starlette", "hypercorn", "httpx"}
