"""confide.runtime.start_child / stop_child: own session, merged output, the whole group stopped."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from confide.runtime import confide_command, start_child, stop_child

DEADLINE = 30.0


def test_a_child_leads_its_own_session_and_writes_both_streams_to_output(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    script = "import os, sys; print(os.getsid(0), flush=True); print('err', file=sys.stderr)"
    with log.open("wb") as out:
        process = start_child([sys.executable, "-c", script], env={}, output=out)
    assert process.wait(DEADLINE) == 0
    sid, err = log.read_text().split()
    assert int(sid) == process.pid != os.getsid(0)
    assert err == "err"


def test_the_environment_is_exactly_the_one_given() -> None:
    script = "import os; print(sorted(k for k in os.environ if k != 'LC_CTYPE'))"
    process = start_child([sys.executable, "-c", script], env={"ONLY": "1"}, output=None)
    assert process.stdout is not None
    with process.stdout:
        assert process.stdout.read().decode().strip() == "['ONLY']"
    assert process.wait(DEADLINE) == 0


def test_stop_reaches_the_grandchildren(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time; "
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(g.pid)); time.sleep(60)"
    )
    process = start_child([sys.executable, "-c", script], env={}, output=None)
    try:
        deadline = time.monotonic() + DEADLINE
        while not pid_file.is_file() or not pid_file.read_text():
            assert process.poll() is None, "the child exited early"
            assert time.monotonic() < deadline, "no grandchild"
            time.sleep(0.01)
        grandchild = int(pid_file.read_text())
    finally:
        code = stop_child(process, DEADLINE)
        assert process.stdout is not None
        process.stdout.close()
    assert code < 0  # ended by a signal
    # The grandchild (reparented) got the same SIGTERM: it is gone or a zombie.
    state = Path(f"/proc/{grandchild}/stat")
    deadline = time.monotonic() + DEADLINE
    while _running(state):
        assert time.monotonic() < deadline, "the grandchild outlived stop_child"
        time.sleep(0.01)


def _running(stat: Path) -> bool:
    try:
        return stat.read_text().split()[2] not in {"Z", "X"}
    except OSError:
        return False


def test_the_confide_command_runs_the_cli() -> None:
    argv = [*confide_command(), "--help"]
    process = start_child(argv, env=dict(os.environ), output=None)
    assert process.stdout is not None
    with process.stdout:
        assert b"Usage" in process.stdout.read()
    assert process.wait(DEADLINE) == 0
