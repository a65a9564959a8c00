import json
import os
import re

import numpy as np
import pytest

from pgx_jax.cli import main
from pgx_jax.rl import checkpoint


@pytest.mark.slow
def test_train_smoke_writes_results(tmp_path, reacher, capsys):
    out = tmp_path / "run"
    assert main(["train", "--budget", "smoke", "--out", str(out), "--no-progress", "--episodes", "2"]) == 0
    result = json.loads((out / "train.json").read_text())
    assert result["tasks"] == list(reacher.task_names)
    assert set(result["per_task_return"]) == set(reacher.task_names)
    assert result["env_steps"] > 0 and result["config"]["num_envs"] % 9 == 0
    assert len(result["learning_curve"]["episode_return"]) == len(result["learning_curve"]["env_steps"])
    assert (out / "learning_curve.png").stat().st_size > 1000
    params, config, meta = checkpoint.load_policy(out / "policy", reacher)
    assert meta["extra"] == {"seed": 0}
    table = capsys.readouterr().out
    assert "| task | return |" in table and "r2g2" in table


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--family", "walker"], "argument --family: invalid choice: 'walker' (choose from 'ant-dir'"),
        (["train", "--budget", "huge"], "argument --budget: invalid choice: 'huge' (choose from"),
        (["train", "--episodes", "0"], "--episodes must be >= 1"),
        (["train", "--conditioning", "goal"], "argument --conditioning: invalid choice: 'goal'"),
        (["run", "--solver", "cg"], "argument --solver: invalid choice: 'cg'"),
        (["validate", "--step", "norm"], "argument --step: invalid choice: 'norm'"),
        (["compare", "--rho", "-1"], "rho must be >= 0, got -1.0"),
        (["run", "--step-size", "0"], "step_size must be > 0 or None, got 0.0"),
        (["run", "--params", "head"], "argument --params: invalid choice: 'head'"),
        (
            ["run", "--evaluator", "oracle"],
            "argument --evaluator: invalid choice: 'oracle'",
        ),
        (["run", "--meta-policy", "late"], "unknown meta_policy 'late'; known: 'full', 'early-F'"),
        (["validate", "--meta-policy", "early-0"], "unknown meta_policy 'early-0'"),
    ],
)
def test_bad_arguments_fail_before_training(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_bad_tasks_file_fails_before_training(tmp_path, capsys):
    f = tmp_path / "t.json"
    f.write_text(json.dumps([{"name": "a", "goal": [1.0, 1.0]}]))
    assert main(["train", "--tasks-file", str(f), "--out", str(tmp_path / "x")]) == 2
    assert "outside the reachable annulus" in capsys.readouterr().err


def test_families_lists_all(capsys):
    from pgx_jax.families import family_names

    assert main(["families"]) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines()[2:]}
    assert sorted(rows) == family_names() and len(rows) == 12
    assert "| 10 | brax inverted_pendulum | spring | dynamics |" in rows["pendulum-physics"]
    assert "2: fwd_g9.81_m1_l1," in rows["pendulum-physics"]  # the planted grouping, by task name
    assert "host (Meta-World, MuJoCo)" in rows["metaworld-mt10"] and "metaworld==3.1.1" in rows["metaworld-mt10"]
    assert "| none |" in rows["metaworld-mt10"]  # no planted grouping
    assert "| 10 | Meta-World MT10 in MuJoCo MJX (one scene) | mjx |" in rows["metaworld-mt10-mjx"]


@pytest.mark.slow
def test_run_smoke_on_a_brax_physics_family(tmp_path):
    """pendulum-physics end to end in the task-agnostic setting (the reacher smoke run of
    test_pipeline covers the one-hot one): the per-task physics pass through meta-training, the
    features and group training in compiled calls; the conditioning is recorded with the result
    and with theta*'s checkpoint."""
    out = tmp_path / "pend"
    argv = ["run", "--family", "pendulum-physics", "--budget", "smoke", "--evaluator", "loss", "--groups", "2"]
    argv += ["--conditioning", "none"]
    argv += ["--step", "kl", "--step-size", "0.02", "--rho", "0.5"]
    assert main(argv + ["--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert len(result["tasks"]) == 10 and len(result["groups"]) == 2
    # the solve's flags are recorded, and it reports what it did: every subset's KL is the target
    surrogate = result["config"]["surrogate"]
    assert (surrogate["step"], surrogate["step_size"], surrogate["rho"]) == ("kl", 0.02, 0.5)
    assert result["solve"]["kl"]["per_subset"] == pytest.approx([0.02] * result["subsets"], rel=1e-3)
    assert all(result["flops"][stage] > 0 for stage in ("features", "solve", "evaluate", "meta_train"))
    assert 100 < result["peak_rss_mb"] < 64 * 1024 and result["machine"]["cpu_count"] >= 1
    assert sorted(i for g in result["groups"] for i in g) == list(range(10))
    returns = np.array(list(result["per_task_return"].values()))
    assert np.isfinite(returns).all() and returns.max() <= 200  # +1 per upright step, 200 steps
    assert result["config"]["ppo"]["network"]["conditioning"] == "none"
    assert result["config"]["meta_policy"] == "early-0.02"  # --meta-policy auto without the task id
    # theta* stopped early is not the multitask baseline: that one is trained with the groups' budget
    multitask, meta = result["multitask_per_task_return"], result["meta_per_task_return"]
    assert set(multitask) == set(meta) == set(result["tasks"]) and np.isfinite(list(multitask.values())).all()
    saved = json.loads((out / "theta_star" / "meta.json").read_text())
    assert saved["config"]["network"]["conditioning"] == "none"
    # what the user takes home: one policy per group, reloaded and re-evaluated to the same returns
    import jax

    import pgx_jax

    family, groups, index = pgx_jax.load_groups(out)
    assert [g["task_ids"] for g in groups] == result["groups"] and index["conditioning"] == "none"
    assert family.task_names == tuple(result["tasks"]) or list(family.task_names) == result["tasks"]
    key = jax.numpy.asarray(index["evaluation"]["key"], jax.numpy.uint32)
    for g in groups:
        again = pgx_jax.evaluate(
            g["params"], family, g["task_ids"], key, index["evaluation"]["episodes"], network=g["config"].network
        )
        saved_returns = [result["per_task_return"][t] for t in g["tasks"]]
        np.testing.assert_allclose(again, saved_returns, rtol=1e-4, atol=1e-3)
        # the same policy as a plain function acts as the evaluation does (the Gaussian's mean)
        act = pgx_jax.make_policy(g["params"], g["config"], family.n_tasks)
        state = family.reset(jax.random.PRNGKey(1), jax.numpy.int32(g["task_ids"][0]))
        mean = pgx_jax.make_policy(g["params"], g["config"].network, family.n_tasks)(state.obs[None])[0]
        np.testing.assert_array_equal(act(state.obs), mean)
        assert act(state.obs).shape == (family.action_size,) and np.all(np.isfinite(act(state.obs)))
        with pytest.raises(ValueError, match=rf"this policy takes \[\.\.\., {family.obs_size}\]"):
            act(state.obs[:-1])  # an observation without the whole task id


@pytest.mark.slow
def test_runs_never_overwrite_each_other_and_latest_points_at_the_newest(tmp_path, monkeypatch, reacher, capsys):
    """Without --out every command writes a new runs/<command>-<family>-s<seed>-<time> and
    links runs/latest to it; an existing non-empty --out is refused unless --overwrite."""
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--budget", "smoke", "--no-progress", "--episodes", "1"]
    assert main(argv) == 0 and main(argv) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name != "latest")
    assert len(runs) == 2 and all(re.fullmatch(r"train-reacher-goals-s0-\d{8}-\d{6}(-2)?", r) for r in runs), runs
    newest = max(runs, key=lambda r: (tmp_path / "runs" / r / "train.json").stat().st_mtime_ns)
    assert (tmp_path / "runs" / "latest").resolve() == (tmp_path / "runs" / newest).resolve()
    assert all((tmp_path / "runs" / r / "policy" / "meta.json").exists() for r in runs)
    capsys.readouterr()
    assert main([*argv, "--out", f"runs/{runs[0]}"]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert main([*argv, "--out", f"runs/{runs[0]}", "--overwrite"]) == 0


def test_resume_without_out_takes_runs_latest_of_the_same_command_and_family(tmp_path, monkeypatch):
    import argparse

    from pgx_jax import cli

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(out=None, resume=True, command="run", family="reacher-goals")
    with pytest.raises(ValueError, match="resumes runs/latest, and there is none"):
        cli.outputs.resolve_out(args)
    (tmp_path / "runs" / "run-reacher-goals-s0-20261205-000000").mkdir(parents=True)
    cli.outputs.link_latest("runs/run-reacher-goals-s0-20261205-000000")
    cli.outputs.resolve_out(args)
    assert args.out == str(tmp_path / "runs" / "run-reacher-goals-s0-20261205-000000")
    other = argparse.Namespace(out=None, resume=True, command="validate", family="reacher-goals")
    with pytest.raises(ValueError, match="not a validate run of reacher-goals; give the --out"):
        cli.outputs.resolve_out(other)
    seeded = argparse.Namespace(out=None, resume=True, command="run", family="reacher-goals", seed=0)
    cli.outputs.resolve_out(seeded)
    assert seeded.out == args.out
    seed1 = argparse.Namespace(out=None, resume=True, command="run", family="reacher-goals", seed=1)
    with pytest.raises(ValueError, match="not a run run of reacher-goals with --seed 1; give the --out"):
        cli.outputs.resolve_out(seed1)


def test_a_default_output_directory_is_claimed_atomically(tmp_path, monkeypatch):
    """Two runs that chose the same default name (the same second): the second finds it taken
    when it makes it, and takes the next free suffix; neither writes into the other's."""
    import argparse

    from pgx_jax import cli

    monkeypatch.chdir(tmp_path)
    first = argparse.Namespace(out=None, command="run", family="reacher-goals", seed=0)
    second = argparse.Namespace(out=None, command="run", family="reacher-goals", seed=0)
    cli.outputs.resolve_out(first)
    cli.outputs.resolve_out(second)
    assert first.out == second.out  # nothing existed yet when both chose
    a = cli.outputs.make_out(first.out, first)
    b = cli.outputs.make_out(second.out, second)
    assert a != b and b == f"{a}-2" and second.out == b and os.path.isdir(a) and os.path.isdir(b)
    assert os.path.realpath("runs/latest") == os.path.realpath(b)


def test_overwrite_removes_the_earlier_runs_outputs_and_nothing_else(tmp_path):
    import argparse

    from pgx_jax import cli

    out = tmp_path / "out"
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events.out.tfevents.1.old").write_text("old")
    (out / "groups" / "0").mkdir(parents=True)
    for name in ("groups.json", "result.json", "affinity_true_full.png", "notes.txt"):
        (out / name).write_text("old")
    args = argparse.Namespace(out=str(out), command="run", family="reacher-goals", overwrite=True, resume=False)
    assert cli.outputs.make_out(str(out), args) == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_version_and_exit_statuses(capsys, monkeypatch, tmp_path):
    """--version prints the package version and the commit; bad input exits 2 (as argparse's
    usage errors do), a failure while running 1."""
    import pgx_jax
    from pgx_jax import cli

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"pgx-jax {pgx_jax.__version__} (")
    assert (cli.USAGE_ERROR, cli.RUN_FAILED) == (2, 1)
    assert main(["run", "--no-such-option"]) == cli.USAGE_ERROR  # argparse's refusals too: one line, status 2
    assert capsys.readouterr().err.strip() == "pgx-jax: error: unrecognized arguments: --no-such-option"
    capsys.readouterr()

    def diverges(args):
        raise FloatingPointError("non-finite reward of task(s) ['broken'] (first at update 3 of run 0)")

    monkeypatch.setattr(cli, "cmd_train", diverges)
    assert main(["train", "--budget", "smoke", "--out", str(tmp_path / "t"), "--no-progress"]) == cli.RUN_FAILED
    assert "pgx-jax: error: non-finite reward of task(s) ['broken']" in capsys.readouterr().err


def _tensorboard_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TFRecord event files under ``logdir``: tag -> [(step, value)]."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i : i + 8])
            event = Event.FromString(data[i + 12 : i + 12 + length])
            i += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_log_tensorboard_writes_the_learning_curve_and_the_returns(tmp_path, reacher):
    out = tmp_path / "run"
    argv = ["train", "--budget", "smoke", "--out", str(out), "--no-progress", "--episodes", "1", "--log", "tensorboard"]
    assert main(argv) == 0
    scalars = _tensorboard_scalars(out / "tensorboard")
    result = json.loads((out / "train.json").read_text())
    curve = result["learning_curve"]
    steps = [s for s, _ in scalars["train/episode_return"]]
    assert steps == sorted(steps) and steps[-1] == curve["env_steps"][-1] and len(steps) >= 2
    for task, value in result["per_task_return"].items():
        assert scalars[f"return/{task}"] == [(0, pytest.approx(value, rel=1e-6))]
    assert {"train/loss", "train/entropy"} <= set(scalars)


@pytest.mark.slow
def test_set_overrides_any_config_field_after_the_other_options(tmp_path):
    out = tmp_path / "t"
    argv = ["train", "--budget", "smoke", "--out", str(out), "--no-progress", "--episodes", "1"]
    assert main([*argv, "--set", "ppo.network.width=32", "ppo.learning_rate=1e-3", "ppo.num_epochs=2"]) == 0
    config = json.loads((out / "train.json").read_text())["config"]
    assert (config["network"]["width"], config["learning_rate"], config["num_epochs"]) == (32, 1e-3, 2)
    params, saved, _ = checkpoint.load_policy(out / "policy")
    assert saved.network.width == 32 and params.actor["params"]["MLP_0"]["Dense_0"]["kernel"].shape[1] == 32


def test_set_reaches_every_config_of_the_pipeline():
    from pgx_jax import make_family, pipeline_config
    from pgx_jax.core.config import with_overrides

    config = pipeline_config("smoke", make_family("reacher-goals"))
    changed = with_overrides(
        config,
        ["ppo.network.activation=relu", "surrogate.rho=0.5", "features.dim=32", "eval_episodes=3", "k_rule=eigengap"],
    )
    assert changed.ppo.network.activation == "relu" and changed.surrogate.rho == 0.5 and changed.features.dim == 32
    assert (changed.eval_episodes, changed.k_rule) == (3, "eigengap") and changed.ppo.num_envs == config.ppo.num_envs
    with pytest.raises(ValueError, match=r"--set 'ppo.network=3': 'network' is a config; set one of its fields"):
        with_overrides(config, ["ppo.network=3"])
    with pytest.raises(ValueError, match=r"--set 'ppo.network.depth=0': network depth must be >= 1, got 0"):
        with_overrides(config, ["ppo.network.depth=0"])


def test_set_types_each_value_by_the_fields_declared_type():
    """Union annotations take any of their arms (``int | str``, ``int | None``); a bool is not an
    int; a value of no arm is refused with the declared type."""
    from pgx_jax import make_family, pipeline_config
    from pgx_jax.core.config import with_overrides

    config = pipeline_config("smoke", make_family("reacher-goals"))
    changed = with_overrides(
        config, ["groups=3", "affinity.subsets=20", "ppo.unroll_length=None", "ppo.learning_rate=1"]
    )
    assert (changed.groups, changed.affinity.subsets, changed.ppo.unroll_length) == (3, 20, None)
    assert isinstance(changed.ppo.learning_rate, float)
    for bad, shown in [
        ("groups=True", "int | str"),
        ("affinity.subsets=2.5", "int | None"),
        ("features.gradient_transitions=many", "int | None"),
        ("ppo.num_epochs=True", "int"),
    ]:
        with pytest.raises(ValueError, match=rf"--set '{re.escape(bad)}': expected {re.escape(shown)} \(the field is"):
            with_overrides(config, [bad])
    with pytest.raises(ValueError, match=r"--set 'groups=3': set it with --groups"):
        with_overrides(config, ["groups=3"], {"groups": "set it with --groups"})
