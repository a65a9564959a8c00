"""Runs each test of ``host_cases.py`` in its own Python process.

Why: four full-suite runs with the host tests in the main process died in XLA's CPU compiler
(three segfaults inside libgcc's unwinder, one abort), each at a compile that came after
gymnasium / Box2D / highway-env / Meta-World environments had been made and stepped in the
same process; the suite without them passed, and so did every benchmark that stepped one
kind of host environment per process (hundreds of compiles after the stepping). The root cause
is not found; one process per test keeps the libraries from meeting.
"""

import inspect
import os
import subprocess
import sys

import host_cases
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _cases() -> list[str]:
    """Test ids of host_cases.py, one per parameter of a parametrized test (its own process too)."""
    out = []
    for name, fn in inspect.getmembers(host_cases, inspect.isfunction):
        if not name.startswith("test_"):
            continue
        params = [m.args[1] for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        out += [f"{name}[{p}]" for p in params[0]] if params else [name]
    return sorted(out)


CASES = _cases()


@pytest.mark.parametrize("case", CASES)
def test_host_case(case):
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{HERE}/host_cases.py::{case}"]
    run = subprocess.run(cmd, cwd=os.path.dirname(HERE), capture_output=True, text=True, timeout=900)
    if run.returncode == 5 or " skipped" in run.stdout and " passed" not in run.stdout:
        pytest.skip(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, f"{case} failed (exit {run.returncode}):\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
