"""Shared fixtures. Compiles are the cost on a 2-core CPU, so families and trained results are
session-scoped and the tiny brax ``fast`` env carries the PPO mechanics tests."""

import os
import shutil
import tempfile
import warnings

# One persistent compilation cache for the whole session, shared by the pytest-xdist workers and
# the CLI subprocesses (they inherit the variable): the smoke runs of run, validate, compare and
# meta-rl, the resume test's four processes and the two-process test compile many of the same
# programs. The controller creates it before the workers start and removes it at the end; it is
# empty at the start of every session, so a suite's time here is a fresh clone's time in CI.
# A directory given in PGX_JAX_TEST_CACHE is the caller's: it is used and kept; an empty value
# turns the cache off (the host-environment cases' processes, tests/test_host.py).
_OWN_CACHE = "PGX_JAX_TEST_CACHE" not in os.environ
if _OWN_CACHE:
    os.environ["PGX_JAX_TEST_CACHE"] = tempfile.mkdtemp(prefix="pgx-jax-test-cache-")
os.environ["PGX_JAX_CACHE"] = os.environ["PGX_JAX_TEST_CACHE"]
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["PGX_JAX_TEST_CACHE"]
# The suite runs in pytest-xdist workers (README: -n 2): on a GPU each worker would otherwise
# reserve 75% of the device's memory for itself.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The suite checks behaviour, not speed, and compiling is most of its time on 2 cores: XLA's
# backend optimisations and LLVM's expensive passes cost compile time and buy run time the tests
# do not need (the train smoke test: 78 s -> 57 s for the first, 60 s -> 52 s for the second).
# Set before JAX initialises its CPU backend. Not for the tests marked ``user_xla_flags``: the
# claims of bit-for-bit equality (common random numbers, kill and resume, one process against
# two) must hold for the programs a user's run compiles, which another optimisation level may
# fuse and round differently; each of those runs in a child process with the user's own flags
# (PGX_JAX_USER_XLA_FLAGS, recorded here before the additions; see pytest_pyfunc_call below).
os.environ.setdefault("PGX_JAX_USER_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
UNDER_USER_FLAGS = os.environ.get("PGX_JAX_TEST_UNDER_USER_FLAGS") == "1"
if not UNDER_USER_FLAGS:
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", "")]
        + [
            f
            for f in ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
            if f.split("=")[0] not in os.environ.get("XLA_FLAGS", "")
        ]
    ).strip()

import jax.numpy as jnp  # noqa: E402 - after the environment above, which JAX reads at import
import pytest  # noqa: E402
from brax import envs  # noqa: E402

warnings.filterwarnings("ignore", message="Brax System, piplines and environments are not actively")


def _push_reward(state, action, params):
    # task "push" (w=+1) is paid for pushing (action > 0), task "rest" (w=-1) for not pushing.
    return params["w"] * (action[0] > 0).astype(jnp.float32)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: over about 15 s on 2 cores (end-to-end commands, multi-process runs, notebooks); the fast tier "
        "is pytest -m 'not slow'",
    )
    config.addinivalue_line(
        "markers",
        "user_xla_flags: runs in a child pytest under the user's XLA flags, not the suite's faster-compiling ones",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """A test marked ``user_xla_flags`` runs in a child ``pytest`` with the XLA flags the user's
    own runs have (the suite's optimisation-level-0 flags dropped) and passes or fails with it;
    in that child (PGX_JAX_TEST_UNDER_USER_FLAGS=1) it runs as any other test. The child shares
    the session's compilation cache (programs compiled under other flags are other entries)."""
    if UNDER_USER_FLAGS or pyfuncitem.get_closest_marker("user_xla_flags") is None:
        return None
    import re
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS=os.environ["PGX_JAX_USER_XLA_FLAGS"], PGX_JAX_TEST_UNDER_USER_FLAGS="1")
    env.pop("PYTEST_XDIST_WORKER", None)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", pyfuncitem.nodeid]
    proc = subprocess.run(argv, cwd=pyfuncitem.config.rootpath, env=env, capture_output=True, text=True, timeout=3000)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and re.search(r"\b1 passed\b", out), (
        f"under the user's XLA flags {env['XLA_FLAGS']!r}:\n{out[-6000:]}"
    )
    return True


def pytest_sessionfinish(session):
    if _OWN_CACHE and "PYTEST_XDIST_WORKER" not in os.environ:  # the controller, or a run without xdist
        shutil.rmtree(os.environ["PGX_JAX_TEST_CACHE"], ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after every test module. Each compiled CPU executable holds
    about 15 memory mappings until its cache entry goes; a pytest-xdist worker that runs a third
    of the suite reached 24,000 mappings mid-suite, and at the kernel's limit (vm.max_map_count,
    65,530) XLA's compiler segfaulted (CI, and here, in the last test of a worker). A module's
    own compiled programs are still shared by its tests; session fixtures hold arrays, not
    executables."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def fast_family():
    """Two opposite tasks over brax's trivial ``fast`` env: the optimal actions differ by sign."""
    from pgx_jax.families import custom_family

    return custom_family(
        "fast-push",
        envs.get_environment("fast"),
        {"w": jnp.array([1.0, -1.0, 1.0, -1.0])},
        _push_reward,
        task_names=["push0", "rest0", "push1", "rest1"],
        groups=[0, 1, 0, 1],
        episode_length=10,
    )


@pytest.fixture(scope="session")
def reacher():
    from pgx_jax.families import make_family

    return make_family("reacher-goals")


@pytest.fixture(scope="session")
def four_goals(tmp_path_factory):
    """A tasks file of 4 reacher goals in 2 regions: few subsets and few group sizes, so few
    compiles (the smoke tests of `validate` and `compare`)."""
    import json

    from pgx_jax.families import FAMILIES

    tasks = [t for t in FAMILIES["reacher-goals"].default_tasks() if t["group"] in (0, 1)]
    tasks = [t for t in tasks if t["name"].endswith(("g0", "g2"))]
    path = tmp_path_factory.mktemp("tasks") / "four.json"
    path.write_text(json.dumps(tasks))
    return str(path)
