"""The `validate` and `compare` commands end to end at the smoke budget (their own file: the two
slowest CLI tests, so pytest-xdist can run them beside the rest)."""

import json

import numpy as np
import pytest

from pgx_jax.cli import main


@pytest.fixture(scope="module")
def four_goals(tmp_path_factory):
    """4 reacher goals in 2 regions: few subsets and few group sizes, so few compiles."""
    from pgx_jax.tasks import FAMILIES

    tasks = [t for t in FAMILIES["reacher-goals"].default_tasks() if t["group"] in (0, 1)]
    tasks = [t for t in tasks if t["name"].endswith(("g0", "g2"))]
    path = tmp_path_factory.mktemp("tasks") / "four.json"
    path.write_text(json.dumps(tasks))
    return str(path)


def test_validate_smoke_writes_complete_json(tmp_path, four_goals, capsys):
    out = tmp_path / "v"
    argv = ["validate", "--budget", "smoke", "--tasks-file", four_goals, "--groups", "2", "--out", str(out)]
    assert main(argv + ["--replicates", "2", "--truth", "both", "--no-progress"]) == 0
    v = json.loads((out / "validation.json").read_text())
    assert set(v["approx_error"]) == {"0.001", "0.005", "0.01", "0.05"}
    for kind in ("random", "random_vs_logp"):
        errs = [v["approx_error"][r][kind] for r in ("0.001", "0.005", "0.01", "0.05")]
        assert all(0 <= a < b for a, b in zip(errs, errs[1:], strict=False)), errs  # shrinks with the step
    step = v["estimate"]["step_relative"]
    assert len(step["per_subset"]) == v["subsets"] and 0 < step["min"] <= step["max"] < 1
    assert v["versions"]["pgx_jax_commit"] != ""
    kl = v["estimate"]["kl"]
    assert len(kl["per_subset"]) == v["subsets"] and 0 < kl["min"] <= kl["mean"] <= kl["max"]
    assert v["estimate"]["rollout_scores_se"]["mean"] >= 0
    assert list(v["truths"]) == ["full", "finetune"] and v["truth"]["kind"] == "full"
    masks = np.array(v["subset_masks"], bool)
    for kind, truth in v["truths"].items():
        for key in ("spearman", "spearman_within_task", "mean_rel_error", "nmi", "true_scores", "true_affinity"):
            assert key in truth
        assert set(truth["by_evaluator"]) == {"rollout", "loss", "gain"}
        true = np.array(truth["true_scores"], dtype=float)
        assert np.all(np.isfinite(true[masks])) and np.all(np.isnan(true[~masks]))
        groups = truth["by_evaluator"]["rollout"]["true_groups"]
        assert sorted(i for g in groups for i in g) == [0, 1, 2, 3] and len(groups) == 2
        assert min(truth["env_steps_per_subset"]) > 0
        (rep,) = truth["replicates"]  # the second training of every subset, against the first
        again = np.array(truth["replicate_scores"][0], dtype=float)
        assert not np.allclose(again[masks], true[masks])  # trained with its own keys
        assert rep["score_noise_sd"] > 0 and truth["self_agreement"]["score_noise_sd"] == rep["score_noise_sd"]
        for key in ("ami", "nmi_chance", "spearman_within_task_null_sd", "tasks_used"):
            assert key in truth and key in truth["by_evaluator"]["gain"]
        assert truth["tasks_used"] <= truth["by_evaluator"]["rollout"]["tasks_total"] <= 4
        sp = v["speedup"]["by_truth"][kind]
        assert sp["reference"]["flops"] > 0 and sp["flops"] > 0 and sp["wall"] > 0
        for png in (f"truth_scatter_{kind}.png", f"affinity_true_{kind}.png"):
            assert (out / png).stat().st_size > 1000
    # full training gives every task of a subset the per-task budget of any group
    full, ft = v["truths"]["full"], v["truths"]["finetune"]
    assert len(set(full["env_steps_per_task"])) == 1 and len(set(ft["env_steps_per_subset"])) == 1
    assert "kl" in ft and "kl" not in full
    sp = v["speedup"]
    assert sp["against"] == "full" and sp["flops"] == sp["by_truth"]["full"]["flops"]
    assert sp["estimation"]["flops"] > 0 and sp["estimation"]["linesearch_trips_per_iteration"] is None  # newton
    solve = v["estimate"]["solve"]
    assert solve["solver"] == "newton" and len(solve["grad_ratio"]["per_subset"]) == v["subsets"]
    assert solve["kl"]["max"] > 0
    for png in ("approx_error.png", "affinity_estimated.png"):
        assert (out / png).stat().st_size > 1000
    assert "[full] speedup in FLOPs" in capsys.readouterr().out


def test_compare_smoke_uses_equal_budgets(tmp_path, four_goals):
    out = tmp_path / "c"
    argv = ["compare", "--budget", "smoke", "--tasks-file", four_goals, "--groups", "2", "--seeds", "1"]
    argv += ["--random-draws", "2", "--groupings", "multitask,random,policygradex", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    c = json.loads((out / "comparison.json").read_text())
    assert list(c["groupings"]) == ["multitask", "per_task", "random", "policygradex"]
    steps = {s for g in c["groupings"].values() for seed in g["env_steps_per_task"] for draw in seed for s in draw}
    assert len(steps) == 1 and steps.pop() > 0  # every group of every grouping: the same steps per task
    per_task = c["groupings"]["per_task"]
    assert np.allclose(per_task["normalized"], 1.0)  # one seed: per_task is the best single-task policy
    assert len(c["groupings"]["random"]["groups"][0]) == 2
    for g in c["groupings"].values():
        assert np.all(np.isfinite(np.array(g["per_task_return"], dtype=float)))
    assert set(c["improvement"]) == set(c["improvement_return"]) == {"multitask", "per_task", "random"}
    assert isinstance(c["ill_conditioned_tasks"], list)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["validate", "--finetune-fraction", "0"], "finetune_fraction must be > 0"),
        (["validate", "--groups", "12"], "--groups 12 must be in [1, 9]"),
        (["compare", "--groupings", "multitask,oracle"], "unknown ['oracle']"),
        (["compare", "--seeds", "0"], "--seeds must be >= 1"),
        (["compare", "--evaluator", "magic"], "unknown evaluator 'magic'"),
        (["validate", "--truth", "oracle"], "unknown truth 'oracle'"),
        (["compare", "--truth", "oracle"], "unknown truth 'oracle'"),
        (["validate", "--conditioning", "task"], "--conditioning: unknown conditioning 'task'"),
        (["run", "--eval-episodes", "0"], "--eval-episodes must be >= 1"),
    ],
)
def test_bad_validate_and_compare_arguments_fail_first(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
