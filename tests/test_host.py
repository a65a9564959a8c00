"""Runs the tests of ``host_cases.py`` in Python processes of their own, one per kind of host
environment (classic control, Box2D, highway-env, Meta-World).

Why: four full-suite runs with the host tests in the main process died in XLA's CPU compiler
(three segfaults inside libgcc's unwinder, one abort), each at a compile that came after
gymnasium / Box2D / highway-env / Meta-World environments had been made and stepped in the
same process; the suite without them passed, and so did every benchmark that stepped one
kind of host environment per process (hundreds of compiles after the stepping). The root cause
is not found; one process per kind keeps the libraries from meeting. (One process per test, as
before, kept them apart too, and paid Python's and JAX's start 16 times instead of 4.)
"""

import inspect
import os
import subprocess
import sys
import warnings

import host_cases
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


#: the kind of host environment a case steps, by a word of its name (classic control otherwise)
KINDS = {"lunarlander": "box2d", "highway": "highway-env", "metaworld": "metaworld"}
#: the classic-control cases that run whole commands or many worker pools (about 80 s together on
#: 2 cores): a kind of their own, in the full suite only (``slow``)
END_TO_END = (
    "test_meta_rl_with_host_workers_reports_what_it_reports_without",
    "test_run_smoke_on_a_host_family",
    "test_a_gymnasium_environment_becomes_a_family_from_its_spaces",
    "test_an_interrupted_step_closes_the_pool_and_the_next_batch_starts_fresh_workers",
)


def _cases() -> dict[str, list[str]]:
    """Test ids of host_cases.py by the kind of environment they step; a parametrized test gives
    one id per parameter."""
    out: dict[str, list[str]] = {}
    for name, fn in inspect.getmembers(host_cases, inspect.isfunction):
        if not name.startswith("test_"):
            continue
        params = [m.args[1] for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        for case in [f"{name}[{p}]" for p in params[0]] if params else [name]:
            kind = next((k for word, k in KINDS.items() if word in case), "classic-control")
            kind = "classic-control-end-to-end" if name in END_TO_END else kind
            out.setdefault(kind, []).append(case)
    return dict(sorted(out.items()))


CASES = _cases()


def test_every_case_has_one_kind():
    cases = [c for kind in CASES.values() for c in kind]
    assert len(cases) == len(set(cases)) >= 16
    assert set(CASES) == {"classic-control", "classic-control-end-to-end", *KINDS.values()}


SLOW_KINDS = ("classic-control-end-to-end",)


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_KINDS else k for k in CASES])
def test_host_cases(kind):
    """The cases of one kind in one process, without the session's compilation cache: a cache
    write once segfaulted in a process that had stepped host environments."""
    ids = [f"{HERE}/host_cases.py::{case}" for case in CASES[kind]]
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *ids]
    env = dict(os.environ, PGX_JAX_TEST_CACHE="")
    run = subprocess.run(cmd, cwd=os.path.dirname(HERE), env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, f"{kind} failed (exit {run.returncode}):\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    if " passed" not in run.stdout:  # every case skipped: an extra not installed
        pytest.skip(run.stdout.strip().splitlines()[-1])
    if skipped:  # some cases skipped: said, not hidden behind the kind's pass
        warnings.warn(f"{kind}: {len(skipped)} of {len(ids)} host cases skipped: " + "; ".join(skipped), stacklevel=1)
