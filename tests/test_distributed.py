"""Multi-process runs (issue 17): the options refused before anything starts, the row blocks,
the single-process identity, and two local CPU processes giving the result of one.

The two-process tests start real processes (``python -m pgx_jax.cli`` with ``--coordinator``
on a free local port, gloo collectives, one CPU device each) and compare their output with a
one-process run of the same command. ``validate`` in two processes against one is in
test_cli_validate.py, after the in-process run whose compiled programs it reuses."""

import os
import subprocess
import sys

import numpy as np
import pytest
from cli_processes import ROOT, cli, free_port

from pgx_jax.cli import main
from pgx_jax.runtime import distributed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"coordinator": "localhost"}, "HOST:PORT"),
        ({"coordinator": "localhost:99999", "num_processes": 2, "process_id": 0}, "port 1-65535"),
        ({"coordinator": "localhost:1234", "num_processes": 2}, "--process-id is required"),
        ({"coordinator": "localhost:1234", "num_processes": 0, "process_id": 0}, "--num-processes must be >= 1, got 0"),
        ({"coordinator": "localhost:1234", "num_processes": 2, "process_id": 2}, r"\[0, 1\] for 2 processes, got 2"),
        ({"coordinator": "auto", "num_processes": 2}, "auto detects the cluster"),
        ({"coordinator": "h:1", "num_processes": 1, "process_id": 0, "timeout_s": 0}, "--distributed-timeout"),
    ],
)
def test_cluster_spec_refuses_bad_options_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        distributed.ClusterSpec(**kwargs)


def test_cli_refuses_process_options_without_a_coordinator_before_any_work(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "--budget", "smoke", "--process-id", "1", "--out", str(out), "--no-progress"]) == 2
    assert "--process-id needs --coordinator" in capsys.readouterr().err
    assert main(["run", "--budget", "smoke", "--coordinator", "nowhere", "--out", str(out)]) == 2
    assert "--coordinator must be HOST:PORT" in capsys.readouterr().err
    assert main(["run", "--budget", "smoke", "--distributed-timeout", "9", "--out", str(out)]) == 2
    assert "--distributed-timeout needs --coordinator" in capsys.readouterr().err
    assert not out.exists()


def test_blocks_cover_the_rows_once_and_one_process_is_the_identity():
    for rows in (1, 5, 6, 1000):
        for p in (1, 2, 3, 7):
            blocks = [distributed.block(rows, p, i) for i in range(p)]
            covered = np.concatenate([np.arange(lo, min(hi, rows)) for lo, hi, _ in blocks])
            np.testing.assert_array_equal(covered, np.arange(rows))  # contiguous, each row once
            assert all(padded % p == 0 and padded - rows < p for _, _, padded in blocks)
    calls = []
    xs = {"a": np.arange(5.0), "b": np.ones((5, 2))}
    out = distributed.across_processes(lambda x: calls.append(x) or x["a"] * 2, xs)
    assert len(calls) == 1 and calls[0] is xs  # one process: fn on the whole input, nothing gathered
    np.testing.assert_array_equal(out, np.arange(5.0) * 2)


WORKER = """
import sys, numpy as np
from pgx_jax.runtime import distributed
distributed.initialize(distributed.ClusterSpec(sys.argv[1], 2, int(sys.argv[2]), timeout_s=60))
def seed(i):  # inside map_processes every process computes alone: no collective in here
    inner = distributed.across_processes(lambda x: x * 10, np.arange(3) + i)
    return {"i": i, "by": distributed.is_main(), "inner": inner.tolist()}
items = distributed.map_processes(seed, [0, 1, 2])
rows = distributed.across_processes(lambda x: {"twice": x * 2, "n": np.full(len(x), len(x))}, np.arange(5.0))
print(repr((items, rows["twice"].tolist(), rows["n"].tolist(), distributed.summary()["gathers"])))
"""


def test_two_processes_split_rows_and_seeds_and_both_get_everything():
    port = free_port()
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
    cmd = lambda i: [sys.executable, "-c", WORKER, f"localhost:{port}", str(i)]  # noqa: E731
    pipe = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs = [subprocess.Popen(cmd(i), cwd=ROOT, env=env, **pipe) for i in (1, 0)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [eval(out.strip().splitlines()[-1]) for out, _ in outs]  # noqa: S307 (our own repr)
    assert results[0] == results[1]  # every process holds the whole result
    items, twice, n, gathers = results[0]
    assert [it["i"] for it in items] == [0, 1, 2] and [it["by"] for it in items] == [True, False, True]  # i % P
    assert [it["inner"] for it in items] == [[0, 10, 20], [10, 20, 30], [20, 30, 40]]
    assert twice == [0.0, 2.0, 4.0, 6.0, 8.0] and n == [3] * 5  # 5 rows: blocks of 3, the last padded
    assert gathers == 5  # the items: ok flags, sizes, bytes; the rows: ok flags, data


FAILING = """
import sys, numpy as np
from pgx_jax.runtime import distributed
distributed.initialize(distributed.ClusterSpec(sys.argv[1], 2, int(sys.argv[2]), timeout_s=60))
def rows(x):
    if not distributed.is_main():
        raise FloatingPointError("non-finite reward on this process's block")
    return x
try:
    distributed.across_processes(rows, np.arange(4.0))
except Exception as e:
    print(type(e).__name__, e)
"""


def _two_workers(script: str, timeout: int = 120) -> list[tuple[str, str]]:
    """``script`` run as processes 1 and 0 of a two-process cluster on a free local port (one CPU
    device each): their ``(stdout, stderr)``, process 1's first."""
    port = free_port()
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
    pipe = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, f"localhost:{port}", str(i)], cwd=ROOT, env=env, **pipe)
        for i in (1, 0)
    ]
    return [p.communicate(timeout=timeout) for p in procs]


def test_an_error_on_one_process_reaches_the_others_at_once():
    """A failure inside one process's block (a non-finite training, say) is raised there and
    reported to the others as PeerFailed, instead of leaving them waiting in the gather."""
    outs = _two_workers(FAILING)
    assert "FloatingPointError non-finite reward" in outs[0][0], outs[0]
    assert "PeerFailed process(es) [1] failed" in outs[1][0], outs[1]


def test_a_process_that_never_joins_fails_the_other_within_the_timeout(tmp_path):
    out = tmp_path / "r"
    argv = ["run", "--budget", "smoke", "--out", str(out), "--no-progress", "--coordinator"]
    argv += [f"localhost:{free_port()}", "--num-processes", "2", "--process-id", "0", "--distributed-timeout", "5"]
    proc = cli(argv)
    _, stderr = proc.communicate(timeout=120)  # bounded: JAX aborts the process after the timeout
    assert proc.returncode != 0
    assert "joining the cluster at localhost" in stderr and "DEADLINE_EXCEEDED" in stderr
    assert not out.exists()  # nothing written: the join comes before the output directory


DISAGREE = """
import sys, numpy as np
from pgx_jax.runtime import distributed
distributed.initialize(distributed.ClusterSpec(sys.argv[1], 2, int(sys.argv[2]), timeout_s=60))
me = int(sys.argv[2])
for name, check in [
    ("fields", lambda: distributed.check_agree({"options": "a", "tasks": "t%d" % me, "code": "c%d" % me})),
    ("tree", lambda: distributed.check_same_tree({"w": np.arange(3.0) + (me == 1) * 1e-7}, "theta*")),
    ("equal", lambda: distributed.check_same_tree({"w": np.arange(3.0)}, "theta*")),
]:
    try:
        check()
        print(name, "agreed")
    except ValueError as e:
        print(name, "ValueError", e)
"""


def test_processes_holding_different_inputs_or_bits_are_refused_naming_the_first_difference():
    """check_agree names the first field that differs (not a later one) and the process that
    differs, on every process; one float's last bits in a tree each process computed are enough."""
    outs = _two_workers(DISAGREE)
    for out, err in outs:
        lines = dict(
            line.split(" ", 1) for line in out.strip().splitlines() if line.split(" ")[0] in ("fields", "tree", "equal")
        )
        assert lines["fields"].startswith("ValueError the processes disagree on tasks: process(es) [1]"), (out, err)
        assert "disagree on theta*: process(es) [1]" in lines["tree"], (out, err)
        assert lines["equal"] == "agreed", (out, err)


def test_two_processes_reading_different_task_files_under_one_name_are_refused_and_write_nothing(tmp_path):
    """Two real processes started in different directories, each with ``--tasks-file tasks.json``
    naming a different file (one gravity differs): both exit 2 naming the tasks, before any work,
    and no output is written."""
    import json

    from pgx_jax.families import task_entries

    tasks = task_entries("pendulum-physics", None, None)
    dirs = [tmp_path / "a", tmp_path / "b"]
    for i, d in enumerate(dirs):
        d.mkdir()
        mine = [dict(t) for t in tasks]
        mine[0]["gravity"] += i  # the same name, other contents
        (d / "tasks.json").write_text(json.dumps(mine))
    port = free_port()
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
    pipe = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    argv = ["run", "--budget", "smoke", "--family", "pendulum-physics", "--tasks-file", "tasks.json", "--out", "out"]
    argv += [
        "--no-progress",
        "--coordinator",
        f"localhost:{port}",
        "--num-processes",
        "2",
        "--distributed-timeout",
        "60",
    ]
    procs = [
        subprocess.Popen([sys.executable, "-m", "pgx_jax.cli", *argv, "--process-id", str(i)], cwd=d, env=env, **pipe)
        for i, d in enumerate(dirs)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 2, err[-2000:]
        assert "disagree on tasks (their parameters): process(es) [1]" in err, err[-2000:]
    for d in dirs:
        assert sorted(os.listdir(d)) == ["tasks.json"]  # no output directory, nothing half-written


WIDE = """
import sys, numpy as np
from pgx_jax.runtime import distributed
distributed.initialize(distributed.ClusterSpec(sys.argv[1], 2, int(sys.argv[2]), timeout_s=60))
me = int(sys.argv[2])
rows = distributed.across_processes(
    lambda x: {"i": x + 2**40, "f": x * (1 + 2.0**-40), "h": x.astype(np.float16)}, np.arange(4, dtype=np.int64)
)
print(repr({k: (str(v.dtype), v.tolist()) for k, v in rows.items()}))
try:  # digests that differ beyond their low 32 bits only
    distributed.check_agree({"code": "same"})
    real = distributed._digest
    distributed._digest = lambda text, me=me: (me << 40) | 5 if text == "other" else real(text)
    distributed.check_agree({"code": "other"})
    print("agreed")
except ValueError as e:
    print("ValueError", e)
"""


def test_gathers_keep_64_bit_values_bit_for_bit():
    """Reviewer's finding (issue 30): process_allgather goes through a device and, without
    jax_enable_x64, cast int64 / float64 to 32 bits, so check_agree compared only 32 bits of each
    digest and a host family's float64 rows came back float32 from two processes."""
    outs = _two_workers(WIDE)
    x = np.arange(4)
    for out, err in outs:
        lines = out.strip().splitlines()
        got = eval(lines[-2])  # noqa: S307 (our own repr)
        assert got["i"] == ("int64", (x + 2**40).tolist()), (out, err)
        assert got["f"] == ("float64", (x * (1 + 2.0**-40)).tolist()), (out, err)
        assert got["h"] == ("float16", x.astype(np.float16).tolist())
        assert lines[-1].startswith("ValueError the processes disagree on code: process(es) [1]"), (out, err)


def test_what_processes_compare_holds_file_contents_not_their_paths(tmp_path):
    """Reviewer's finding (issue 30): the same task file under two absolute paths, or two output
    directories, made check_agree refuse a correct run; another file's bytes must still differ."""
    import json

    from pgx_jax.cli.args import build_parser
    from pgx_jax.cli.outputs import run_inputs

    entries = json.loads(json.dumps(__import__("pgx_jax.families", fromlist=["x"]).task_entries("reacher-goals")))
    for d in ("a", "b", "c"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "tasks.json").write_text(json.dumps(entries if d != "c" else entries[:-1]))
    inputs = {
        d: run_inputs(
            build_parser().parse_args(
                ["run", "--family", "reacher-goals", "--tasks-file", str(tmp_path / d / "tasks.json"), "--out", d]
            )
        )
        for d in "abc"
    }
    assert inputs["a"] == inputs["b"]
    differ = [k for k in inputs["a"] if inputs["a"][k] != inputs["c"][k]]
    assert differ == ["tasks (their parameters)", "input files (their bytes)"]
