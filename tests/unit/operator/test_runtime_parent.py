"""The runtime parent's children, seen from inside (issue 14; ADR 0031).

The parent runs here with a stand-in for the runtime's command (``confide report``
prints what the child sees: its environment, ``random``, descriptors, folder and
command line), so each fork costs milliseconds; the parent's own code, the fork,
the channel and the reaping are the real ones.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from confide.operator._backend import LOCAL_RUNTIME_ENVIRONMENT
from confide.operator._runtime_parent import RuntimeParent
from confide.runtime._parent import EXIT_STALE_PARENT

#: Seconds a child gets to end.
CHILD_TIMEOUT = 30.0
#: The parent, with ``confide report`` and ``confide fail <code>`` as its only commands,
#: and the installed runtime's digest read from ``CONFIDE_TEST_DIGEST`` (unset: zeros).
STAND_IN = """
import json, os, random, sys
import confide.cli as cli
import confide.runtime as runtime

def load_commands(argv):
    def command(*, args, prog_name):
        if args[0] == "report":
            print(json.dumps({
                "environ": dict(os.environ),
                "random": random.random(),
                "fds": sorted(os.listdir("/proc/self/fd")),
                "cwd": os.getcwd(),
                "argv": sys.argv,
                "args": args,
            }), flush=True)
            raise SystemExit(0)
        print("error: app unusable: no such app", file=sys.stderr, flush=True)
        raise SystemExit(int(args[1]))
    return command

cli.load_commands = load_commands
runtime.runtime_code_hash = lambda: bytes.fromhex(os.environ.get("CONFIDE_TEST_DIGEST", "00" * 32))
from confide.runtime._parent import main
main()
"""


@pytest.fixture(name="parent")
def parent_fixture(tmp_path: Path) -> Iterator[RuntimeParent]:
    parent = RuntimeParent(
        environment=LOCAL_RUNTIME_ENVIRONMENT, log=tmp_path / "parent.log", code=STAND_IN
    )
    yield parent
    parent.close()


def launch(
    parent: RuntimeParent,
    tmp_path: Path,
    *args: str,
    environment: dict[str, str] | None = None,
) -> tuple[int, str]:
    """Run ``confide <args>`` in a forked child; its exit code and output."""
    log = tmp_path / f"child-{len(list(tmp_path.glob('child-*')))}.log"
    with open(log, "ab") as f:
        pid = parent.launch(
            argv=list(args),
            title=["/usr/bin/confide", *args],
            environment=dict(LOCAL_RUNTIME_ENVIRONMENT) if environment is None else environment,
            cwd=tmp_path,
            limit=2 * 1024**3,
            nice=0,
            log_fd=f.fileno(),
        )
    deadline = time.monotonic() + CHILD_TIMEOUT
    while pid not in parent.exits:
        assert time.monotonic() < deadline, "the child did not end"
        parent.poll()
        time.sleep(0.01)
    return parent.exits[pid], log.read_text()


def test_children_get_the_fresh_environment_their_own_random_and_no_descriptor(
    parent: RuntimeParent, tmp_path: Path
) -> None:
    reports = []
    for _ in range(2):
        code, output = launch(parent, tmp_path, "report", "--x")
        assert code == 0
        reports.append(json.loads(output))
    one, two = reports
    for report in reports:
        # Exactly what a fresh runtime is given, nothing of the parent's or the test's.
        assert report["environ"] == dict(LOCAL_RUNTIME_ENVIRONMENT)
        assert report["cwd"] == str(tmp_path)
        assert report["argv"] == ["/usr/bin/confide", "report", "--x"]
        assert report["args"] == ["report", "--x"]
        # stdin, stdout, stderr and the listing's own descriptor: nothing else.
        assert len(report["fds"]) == 4
    assert one["random"] != two["random"]


def test_a_childs_environment_is_the_requests(parent: RuntimeParent, tmp_path: Path) -> None:
    asked = {"PATH": "/bin", "ONLY": "this"}
    code, output = launch(parent, tmp_path, "report", environment=asked)
    assert code == 0
    assert json.loads(output)["environ"] == asked


def test_exit_codes_and_last_lines_come_back(parent: RuntimeParent, tmp_path: Path) -> None:
    code, output = launch(parent, tmp_path, "fail", "4")
    assert code == 4
    assert output.strip().endswith("error: app unusable: no such app")


def test_a_child_refuses_to_run_when_the_installed_runtime_changed(
    parent: RuntimeParent, tmp_path: Path
) -> None:
    changed = dict(LOCAL_RUNTIME_ENVIRONMENT, CONFIDE_TEST_DIGEST="ff" * 32)
    code, output = launch(parent, tmp_path, "report", environment=changed)
    assert code == EXIT_STALE_PARENT
    assert "the installed runtime changed since its parent imported it" in output
    assert '"environ"' not in output  # the command never ran
    assert parent.digest == bytes(32)


def test_the_parent_ends_with_its_channel_and_its_children_run_on(
    parent: RuntimeParent, tmp_path: Path
) -> None:
    assert parent.alive
    parent.close()
    assert parent.process.returncode == 0
    assert not parent.alive
    with pytest.raises(OSError):
        launch(parent, tmp_path, "report")
    assert os.path.exists(tmp_path / "parent.log")
