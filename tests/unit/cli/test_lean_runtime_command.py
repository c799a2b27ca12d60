"""``confide runtime`` (once per app launch) imports only its own command, not the owner's
and operator's ones (issue 14: ~0.3 s of CPU per launch); every other command line and
``confide.cli.app`` still get every command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Modules only other commands need: none may load in a runtime's process.
NOT_IN_A_RUNTIME = (
    "confide.client",
    "confide.release",
    "confide.operator",
    "confide.cli._deploy",
    "confide.cli._account",
    "confide.cli._operator",
    "confide.cli._proxy",
    "confide.cli._attest",
)


def _modules_after(argv: list[str]) -> tuple[set[str], list[str]]:
    """What ``confide <argv>`` imported (through the console entry point), and its commands."""
    probe = (
        "import json, sys\n"
        f"sys.argv = ['confide', *{argv!r}]\n"
        "from confide.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "from confide.cli._app import app\n"
        "names = sorted(c.name or c.callback.__name__ for c in app.registered_commands)\n"
        "print(json.dumps([sorted(sys.modules), names]), file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    modules, names = json.loads(out.stderr.strip().splitlines()[-1])
    return set(modules), names


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["runtime", "--help"], "runtime"),
        (["--debug", "runtime", "--help"], "runtime"),
        (["td-runtime", "--help"], "td-runtime"),
    ],
)
def test_the_runtime_commands_import_only_themselves(argv: list[str], command: str) -> None:
    modules, names = _modules_after(argv)
    assert command in names
    assert "deploy" not in names
    loaded = sorted(m for m in modules if m.startswith(NOT_IN_A_RUNTIME))
    assert loaded == []
    # Guard against a vacuous pass: the runtime itself did load.
    assert {"confide.cli._runtime", "confide.runtime"} <= modules


def test_any_other_command_line_gets_every_command() -> None:
    modules, names = _modules_after(["--help"])
    assert {"runtime", "td-runtime", "deploy", "verify"} <= set(names)
    assert "confide.cli._deploy" in modules


def test_the_app_attribute_has_every_command() -> None:
    from confide.cli import app
    from confide.cli._app import COMMAND_MODULES

    names = {c.name for c in app.registered_commands}
    assert {"runtime", "td-runtime", "deploy", "verify"} <= names
    assert all(f"confide.cli.{m}" in sys.modules for m in COMMAND_MODULES)
