"""The catalogue of bad input (listed in docs/bad_input.md).

Every kind is refused the same way: exit status 2, one line on stderr that names the bad value
(and, where there is a short list, what is allowed), before any environment is built and before
anything compiles, and nothing is written (the directory the test works in is unchanged, byte for
byte). A non-finite reward is the one kind found at run time: it is reported with the task and
the update, never averaged into a NaN return.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re

import jax
import numpy as np
import pytest
from flax import serialization

import pgx_jax.families
from pgx_jax.cli import main
from pgx_jax.families import FAMILIES
from pgx_jax.rl.checkpoint import FORMAT

COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: COMPILES.append(event) if "backend_compile" in event else None
)

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "bad_input.md"
REACHER = [t for t in FAMILIES["reacher-goals"].default_tasks()]
NAMES = [t["name"] for t in REACHER]
PLAIN = [{"name": t["name"], "goal": t["goal"]} for t in REACHER]  # without the planted groups


def _tasks(tmp: pathlib.Path, name: str, content) -> str:
    path = tmp / "in" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _checkpoint(tmp: pathlib.Path, *, family="reacher-goals", tasks=NAMES, conditioning="task_id", fmt=FORMAT,
                meta_text=None, params=b"ok") -> str:  # fmt: skip
    """An --out holding a theta* checkpoint's files (meta.json and params.msgpack) as given."""
    out = tmp / "prev"
    ckpt = out / "theta_star"
    ckpt.mkdir(parents=True)
    meta = {
        "format": fmt,
        "family": family,
        "tasks": tasks,
        "config": {"network": {"conditioning": conditioning}},
        "shapes": {"['w']": [2, 3]},
    }
    (ckpt / "meta.json").write_text(meta_text if meta_text is not None else json.dumps(meta))
    body = serialization.to_bytes({"w": np.zeros((2, 3), np.float32)}) if params == b"ok" else params
    (ckpt / "params.msgpack").write_bytes(body)
    return str(out)


R = ["run", "--family", "reacher-goals"]


def _pickled_stage(tmp: pathlib.Path) -> str:
    """A run directory whose ``stages/`` holds a pickle (an older version's, or a planted one)."""
    (tmp / "prev" / "stages").mkdir(parents=True)
    (tmp / "prev" / "stages" / "estimate.pkl").write_bytes(b"\x80\x04K\x01.")  # pickle of 1
    return str(tmp / "prev")


def _earlier_run(tmp: pathlib.Path) -> pathlib.Path:
    """A directory with an earlier run's result in it."""
    (tmp / "earlier").mkdir()
    (tmp / "earlier" / "result.json").write_text("{}")
    return tmp / "earlier"


def _not_a_run(tmp: pathlib.Path) -> pathlib.Path:
    """A non-empty directory that holds no earlier run (a project folder, say)."""
    (tmp / "project" / "policy").mkdir(parents=True)
    (tmp / "project" / "notes.txt").write_text("mine")
    return tmp / "project"


#: (kind, argv from the working directory, the message's telling part)
CATALOGUE = [
    ("k above n", lambda t: R + ["--groups", "12"], "--groups 12 must be in [1, 9] (the number of tasks) or 'auto'"),
    ("k below 1", lambda t: R + ["--groups", "0"], "--groups 0 must be in [1, 9]"),
    ("k not a number", lambda t: R + ["--groups", "two"], "--groups must be an integer or 'auto', got 'two'"),
    ("m too small to cover pairs", lambda t: R + ["--subsets", "3"], "3 subsets of size 4 cannot cover all 36"),
    ("m above the distinct subsets", lambda t: R + ["--subsets", "999"], "subsets m = 999 exceeds the 126 distinct"),
    ("d below 1", lambda t: R + ["--dim", "0"], "--dim must be >= 1, got 0"),
    ("subset size above n", lambda t: R + ["--subset-size", "10"], "subset_size 10 exceeds the number of tasks 9"),
    ("subset size below 2", lambda t: R + ["--subset-size", "1"], "subset_size must be >= 2 (a pair), got 1"),
    ("negative episodes", lambda t: ["train", "--episodes", "-1"], "--episodes must be >= 1, got -1"),
    ("zero evaluation episodes", lambda t: R + ["--eval-episodes", "0"], "--eval-episodes must be >= 1, got 0"),
    (
        "environments not a multiple of n",
        lambda t: R + ["--num-envs", "100"],
        "--num-envs must be a positive multiple of the number of tasks 9, got 100",
    ),
    (
        "negative fine-tune budget",
        lambda t: ["validate", "--finetune-fraction", "-0.1"],
        "finetune_fraction must be > 0",
    ),
    ("zero seeds", lambda t: ["compare", "--seeds", "0"], "--seeds must be >= 1, got 0"),
    ("negative seed", lambda t: R + ["--seed", "-1"], "--seed must be >= 0, got -1"),
    (
        "unknown config field",
        lambda t: R + ["--set", "ppo.lr=1e-3"],
        "--set 'ppo.lr=1e-3': no field 'lr' here; allowed: ['clip_eps'",
    ),
    (
        "config field of another type",
        lambda t: R + ["--set", "ppo.learning_rate=fast"],
        "--set 'ppo.learning_rate=fast': expected float (the field is 0.0003), got 'fast'",
    ),
    (
        "host workers for a JAX family",
        lambda t: R + ["--host-workers", "2"],
        "--host-workers 2: family reacher-goals is stepped by JAX, not on the host; allowed with ['cartpole-physics'",
    ),
    (
        "negative host workers",
        lambda t: ["run", "--family", "cartpole-physics", "--host-workers", "-1"],
        "--host-workers must be >= 0 (0: step in this process), got -1",
    ),
    (
        "a bool for an integer field",
        lambda t: R + ["--set", "ppo.num_epochs=True"],
        "--set 'ppo.num_epochs=True': expected int (the field is 4), got True",
    ),
    (
        "config field with its own option",
        lambda t: R + ["--set", "ppo.network.conditioning=task_id"],
        "--set 'ppo.network.conditioning=task_id': set it with --conditioning (its checks run there)",
    ),
    (
        "config field the command decides",
        lambda t: R + ["--set", "train_groups=False"],
        "--set 'train_groups=False': run decides whether the groups are trained; not settable",
    ),
    (
        "unknown family",
        lambda t: ["run", "--family", "walker"],
        "argument --family: invalid choice: 'walker' (choose from 'ant-dir'",
    ),
    (
        "unknown budget",
        lambda t: R + ["--budget", "huge"],
        "argument --budget: invalid choice: 'huge' (choose from 'smoke', 'demo', 'full')",
    ),
    (
        "unknown evaluator",
        lambda t: R + ["--evaluator", "oracle"],
        "argument --evaluator: invalid choice: 'oracle' (choose from 'rollout'",
    ),
    (
        "unknown solver",
        lambda t: R + ["--solver", "cg"],
        "argument --solver: invalid choice: 'cg' (choose from 'newton', 'lbfgs')",
    ),
    (
        "unknown conditioning",
        lambda t: R + ["--conditioning", "goal"],
        "argument --conditioning: invalid choice: 'goal' (choose from 'task_id', 'none')",
    ),
    (
        "unknown clustering",
        lambda t: R + ["--cluster", "kmeans"],
        "argument --cluster: invalid choice: 'kmeans' (choose from 'sdp', 'spectral')",
    ),
    ("unknown meta-policy", lambda t: R + ["--meta-policy", "late"], "unknown meta_policy 'late'; known: 'full'"),
    ("unknown grouping", lambda t: ["compare", "--groupings", "multitask,oracle"], "unknown ['oracle']"),
    (
        "unknown truth",
        lambda t: ["validate", "--truth", "oracle"],
        "argument --truth: invalid choice: 'oracle' (choose from 'full'",
    ),
    ("one Hessian probe", lambda t: ["validate", "--hessian", "--hessian-probes", "1"], "probes must be >= 2"),
    ("tasks file missing", lambda t: R + ["--tasks-file", str(t / "none.json")], "does not exist"),
    ("tasks file not JSON", lambda t: R + ["--tasks-file", _tasks(t, "a.json", "{x")], "is not valid JSON"),
    ("tasks file not a list", lambda t: R + ["--tasks-file", _tasks(t, "b.json", {"a": 1})], "got dict"),
    ("tasks file empty", lambda t: R + ["--tasks-file", _tasks(t, "c.json", [])], "expected a non-empty JSON list"),
    ("task field missing", lambda t: R + ["--tasks-file", _tasks(t, "d.json", [{"name": "a"}, *PLAIN[1:]])], "'goal'"),
    (
        "task field extra",
        lambda t: R + ["--tasks-file", _tasks(t, "e.json", [dict(PLAIN[0], colour=1), *PLAIN[1:]])],
        "unknown keys ['colour']; allowed: ['goal', 'group', 'name']",
    ),
    (
        "task parameter NaN",
        lambda t: R + ["--tasks-file", _tasks(t, "f.json", '[{"name": "a", "goal": [NaN, 0.1]}]')],
        "'goal' must be finite, got [nan, 0.1]",
    ),
    (
        "task parameter infinite",
        lambda t: R + ["--tasks-file", _tasks(t, "g.json", '[{"name": "a", "goal": [Infinity, 0.1]}]')],
        "'goal' must be finite, got [inf, 0.1]",
    ),
    (
        "duplicate task names",
        lambda t: R + ["--tasks-file", _tasks(t, "h.json", [PLAIN[0], dict(PLAIN[1], name=NAMES[0])])],
        f"duplicate task name '{NAMES[0]}'",
    ),
    (
        "physically impossible task",
        lambda t: R + ["--tasks-file", _tasks(t, "i.json", [{"name": "a", "goal": [1.0, 1.0]}, *PLAIN[1:]])],
        "outside the reachable annulus",
    ),
    ("one task only", lambda t: R + ["--tasks-file", _tasks(t, "j.json", PLAIN[:1])], "grouping needs at least 2"),
    ("layout malformed", lambda t: R + ["--layout", "random:-3"], "--layout 'random:-3': allowed 'default' or"),
    (
        "layout and tasks file",
        lambda t: R + ["--layout", "random:1", "--tasks-file", _tasks(t, "m.json", PLAIN)],
        "or --layout 'random:1', not both",
    ),
    (
        "layout of a family without a generator",
        lambda t: ["run", "--family", "metaworld-mt10", "--layout", "random:1"],
        "family 'metaworld-mt10' has no layout generator; those with one: ['ant-dir'",
    ),
    ("output is a file", lambda t: R + ["--out", _tasks(t, "k.json", "x")], "is a file; allowed: a directory"),
    ("output not writable", lambda t: R + ["--out", _tasks(t, "l.json", "x") + "/sub"], "is not writable"),
    ("resume without checkpoint", lambda t: R + ["--resume", "--out", str(t)], "nothing to resume at"),
    (
        "output holds an earlier run",
        lambda t: R + ["--out", str(_earlier_run(t))],
        "already holds files (an earlier run?); allowed: a new or empty directory, --resume",
    ),
    (
        "overwrite of a folder that holds no run",
        lambda t: R + ["--out", str(_not_a_run(t)), "--overwrite"],
        "holds files but no earlier pgx-jax run (none of ['result.json'",
    ),
    (
        "checkpoint of another family",
        lambda t: R + ["--resume", "--out", _checkpoint(t, family="cheetah-vel")],
        "made for family 'cheetah-vel'",
    ),
    (
        "checkpoint of another conditioning",
        lambda t: R + ["--conditioning", "none", "--resume", "--out", _checkpoint(t)],
        "trained with conditioning 'task_id', not --conditioning 'none'",
    ),
    (
        "checkpoint from other tasks or code",
        lambda t: R + ["--resume", "--out", _checkpoint(t, conditioning="none")],
        "was meta-trained from other task parameters or other code than this run's (not recorded against",
    ),
    (
        "checkpoint of another version",
        lambda t: R + ["--resume", "--out", _checkpoint(t, fmt="pgx_jax.policy/0")],
        "unknown checkpoint format 'pgx_jax.policy/0'; expected 'pgx_jax.policy/1'",
    ),
    (
        "checkpoint meta corrupted",
        lambda t: R + ["--resume", "--out", _checkpoint(t, meta_text='{"format": ')],
        "meta.json' is corrupt",
    ),
    (
        "checkpoint parameters corrupted",
        lambda t: R + ["--resume", "--out", _checkpoint(t, params=b"\xc1\x00garbage")],
        "params.msgpack is corrupt",
    ),
    (
        "stage that is not data",
        lambda t: R + ["--resume", "--out", _pickled_stage(t)],
        "stages/estimate.pkl is not a stage this version can read: a pickled stage",
    ),
]


def _no_family(*args, **kwargs):
    raise AssertionError("an environment was built before the bad input was refused")


def _snapshot(root: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("kind, argv, message", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_input_is_refused_first_in_one_line(kind, argv, message, tmp_path, monkeypatch, capsys):
    args = argv(tmp_path)
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "out")]
    # the builders make_family calls, looked up when called: a module that bound make_family by name
    # (even one first imported inside this test) cannot build an environment either
    monkeypatch.setattr(pgx_jax.families.registry, "_brax_family", _no_family)
    monkeypatch.setattr(pgx_jax.families.registry, "make_host_family", _no_family)
    before, compiles = _snapshot(tmp_path), len(COMPILES)
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgx-jax: error: "), err
    assert message in err[0], err[0]
    assert len(COMPILES) == compiles, f"{kind}: compiled {COMPILES[compiles:]}"
    assert _snapshot(tmp_path) == before  # nothing written, nothing half-written


def _readme_table() -> dict[str, tuple[list[str], str]]:
    """The rows of docs/bad_input.md's table: kind -> (the example's words, the stderr line)."""
    section = DOC.read_text()
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert lines[0].split("|")[1:4] == [" kind ", " example ", " the line on stderr "], lines[0]
    rows = {}
    for line in lines[1:]:
        kind, example, stderr = (cell.strip() for cell in line.strip().strip("|").split(" | "))
        assert kind not in rows, f"docs/bad_input.md lists {kind!r} twice"
        rows[kind] = (example.strip("`").split(), stderr)
    return rows


def test_the_catalogue_is_the_documented_table(tmp_path):
    """The kinds tested here are exactly docs/bad_input.md's rows (a kind missing from either side, or
    added to one only, fails), each row runs the same command with the same options as its case
    here, and its stderr line holds the case's message."""
    rows = _readme_table()
    kinds = [c[0] for c in CATALOGUE]
    assert len(set(kinds)) == len(kinds)
    claimed = re.search(r"(\d+) kinds of\s+bad input \((\d+) since issue \d+\)", DOC.read_text())
    assert claimed and int(claimed.group(2)) == len(kinds), "docs/bad_input.md's count of kinds is not the table's"
    assert set(kinds) == set(rows), (
        f"in the tests only: {sorted(set(kinds) - set(rows))}; "
        f"in docs/bad_input.md only: {sorted(set(rows) - set(kinds))}"
    )
    assert kinds == list(rows)  # the same order
    for kind, argv, message in CATALOGUE:
        example, stderr = rows[kind]
        (tmp_path / kind).mkdir()
        args = argv(tmp_path / kind)
        assert example[0] == "pgx-jax" and example[1] == args[0], (kind, example)
        options = {a for a in args if a.startswith("--")} | {"--out"}
        assert {a for a in example if a.startswith("--")} == options, (kind, example, args)
        assert message.rstrip(".[") in stderr.replace("...", ""), (kind, message, stderr)


def test_a_nonfinite_reward_is_reported_with_its_task_and_update():
    """A custom family whose task 'broken' pays NaN: of two runs in one vmapped call, the run
    without that task is finite; the run with it fails naming the run, the first update and the
    task (not a NaN return averaged into the results)."""
    import jax.numpy as jnp
    from brax import envs

    from pgx_jax import simulators
    from pgx_jax.core.config import PPOConfig
    from pgx_jax.families import custom_family
    from pgx_jax.rl import ppo

    family = custom_family(
        "fast-nan",
        envs.get_environment("fast"),
        {"w": jnp.array([1.0, jnp.nan, -1.0])},
        lambda state, action, p: p["w"] * action[0],
        task_names=["push", "broken", "rest"],
        episode_length=10,
    )
    config = PPOConfig(total_env_steps=240, num_envs=6, num_epochs=1, num_minibatches=2)
    masks = jnp.array([[True, False, True], [True, True, False]])
    _, metrics = simulators.train_many(config, family, masks, jax.random.split(jax.random.PRNGKey(0), 2))
    assert np.asarray(metrics["finite"])[0].all() and not np.asarray(metrics["finite"])[1].any()
    ppo.check_finite(jax.tree.map(lambda x: x[0], metrics), family.task_names)  # the healthy run passes
    with pytest.raises(FloatingPointError, match=r"first at update 0 of run 1 .*reward of task\(s\) \['broken'\]"):
        ppo.check_finite(metrics, family.task_names)
