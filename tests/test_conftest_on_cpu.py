"""The suite's exit: pytest's status, and no crash from native finalisers after a finished session."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CRASHES_AT_EXIT = """
import atexit, os, signal, sys

class Native:
    def __del__(self, kill=os.kill, pid=os.getpid(), signal=signal.SIGSEGV):  # crashes the interpreter's teardown
        kill(pid, signal)

ENGINE = Native()
atexit.register(lambda: sys.stdout.write("exit handlers ran\\n"))

def test_ok():
    assert True
"""


@pytest.mark.parametrize("body, status", [
    (CRASHES_AT_EXIT, 0),
    ("def test_fails():\n    assert False\n", 1),
    ("", 5),  # no tests
], ids=["crashing-finaliser", "failing-test", "no-tests"])
def test_the_session_status_is_the_exit_status(tmp_path, body, status):
    (tmp_path / "test_case.py").write_text(body)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                             str(tmp_path / "test_case.py")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == status, result.stdout[-2000:] + result.stderr[-2000:]
    if body == CRASHES_AT_EXIT:
        assert "exit handlers ran" in result.stdout


def test_without_the_hook_that_finaliser_crashes(tmp_path):
    """The case above is a real crash: plain pytest dies of it."""
    (tmp_path / "test_case.py").write_text(CRASHES_AT_EXIT)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest",
                             str(tmp_path / "test_case.py")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == -11  # SIGSEGV
