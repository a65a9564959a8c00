"""`validate` end to end at the smoke budget on 4 reacher goals: in process with every option,
killed twice and resumed, and in two processes against one; `compare` on the same tasks; then
the bad arguments of `validate` and `compare`. One file, in this order, on purpose:
pytest-xdist's loadfile runs it on one worker, so the in-process run fills the session's
compilation cache first and the seven subprocesses and `compare` after it compile only what is
new to them (the half-batch programs of the two-process run, compare's group trainings)."""

import json

import numpy as np
import pytest
from cli_processes import one_and_two, validate

from pgx_jax.cli import main


def test_validate_smoke_writes_complete_json(tmp_path, four_goals, capsys):
    out = tmp_path / "v"
    argv = ["validate", "--budget", "smoke", "--tasks-file", four_goals, "--groups", "2", "--out", str(out)]
    hessian = ["--hessian", "--hessian-probes", "2", "--hessian-subsets", "2"]
    assert main(argv + ["--replicates", "2", "--truth", "both", "--no-progress", *hessian]) == 0
    v = json.loads((out / "validation.json").read_text())
    h = v["hessian"]  # the generalisation analysis of the first 2 estimated policies
    assert h["objective"] == "ppo" and h["subsets_analysed"] == 2 and h["probes"] == 2
    assert set(h["by_objective"]) == {"ppo", "log_likelihood"} and h["bound"] == h["by_objective"]["ppo"]["bound"]
    for o in h["by_objective"].values():
        for point in ("estimated", "theta_star"):
            assert len(o["traces"][point]["mean"]) == len(h["layers"]) == len(o["traces"][point]["se"])
            assert np.all(np.array(o["traces"][point]["se"]) > 0)
        assert len(o["bound"]["per_subset"]) == 2 and o["bound"]["mean"] > 0
        assert np.isfinite(o["observed_gap"]["mean"]) and o["loss_range"]["mean"] > 0
        assert all(n > 0 for n in o["n"])
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
        assert set(truth["by_evaluator"]) == {"rollout", "loss", "gain", "alignment"}
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
    printed = capsys.readouterr().out
    assert "[full] speedup in FLOPs" in printed and "[hessian, log_likelihood] bound" in printed


def test_validate_killed_in_meta_training_and_in_the_truth_resumes_to_the_same_result(tmp_path, four_goals):
    reference = validate(tmp_path / "ref", "--tasks-file", four_goals)
    assert reference.returncode == 0, reference.stderr[-2000:]
    out = tmp_path / "killed"
    # SIGKILL right after meta-training saved its second chunk: no theta* yet
    run = validate(out, "--tasks-file", four_goals, kill_after="meta_train_partial:2")
    assert run.returncode == -9, run.stderr[-2000:]
    assert not (out / "theta_star").exists() and (out / "stages" / "meta_train_partial.pkl").exists()
    # resumed: meta-training continues from there (not from update 0); killed again right after
    # the estimate is saved, before the truth trains
    run = validate(out, "--tasks-file", four_goals, "--resume", kill_after="estimate")
    assert run.returncode == -9, run.stderr[-2000:]
    assert "resuming meta-training at update " in run.stderr and "at update 0 " not in run.stderr, run.stderr[-2000:]
    assert (out / "theta_star" / "meta.json").exists() and not (out / "validation.json").exists()
    assert not (out / "stages" / "meta_train_partial.pkl").exists()  # obsolete once theta* is saved
    run = validate(out, "--tasks-file", four_goals, "--resume")
    assert run.returncode == 0, run.stderr[-2000:]
    a = json.loads((tmp_path / "ref" / "validation.json").read_text())
    b = json.loads((out / "validation.json").read_text())
    assert b["stages"]["reused"] == ["estimate"] and "truth_finetune_0" in b["stages"]["computed"]
    for path in (("truth", "true_scores"), ("truth", "by_evaluator", "rollout", "estimated_scores")):
        x, y = a, b
        for k in path:
            x, y = x[k], y[k]
        np.testing.assert_array_equal(np.array(x, float), np.array(y, float))
    assert a["truth"]["true_groups"] == b["truth"]["true_groups"] and a["approx_error"] == b["approx_error"]
    assert a["estimate"]["kl"] == b["estimate"]["kl"]


def test_two_processes_validate_as_one(tmp_path, four_goals):
    """``validate --truth full`` at smoke on 4 tasks: the subsets, estimates, affinity, groups and
    full-training truth of two processes equal one process's. Tolerance: the estimate's and the
    truth's rows run in blocks of half the batch, and XLA's CPU programs for another batch shape
    may round differently (float32 ~1e-6 relative); groups must be identical."""
    argv = ["validate", "--budget", "smoke", "--tasks-file", four_goals, "--groups", "2", "--truth", "full"]
    a, b = one_and_two(argv, tmp_path, "validation.json")
    assert a["distributed"]["processes"] == 1 and b["distributed"]["processes"] == 2
    assert b["distributed"]["gathers"] >= 3  # solves, evaluation, truth trainings went through the gather
    assert a["subset_masks"] == b["subset_masks"]
    rollout = ("truths", "full", "by_evaluator", "rollout")
    for path in (
        (*rollout, "estimated_scores"),
        (*rollout, "estimated_affinity"),
        ("truths", "full", "true_scores"),
        ("truths", "full", "true_affinity"),
    ):
        x, y = a, b
        for k in path:
            x, y = x[k], y[k]
        np.testing.assert_allclose(np.array(x, float), np.array(y, float), rtol=1e-4, atol=1e-4, err_msg=str(path))
    for k in ("estimated_groups", "true_groups"):
        assert a["truths"]["full"]["by_evaluator"]["rollout"][k] == b["truths"]["full"]["by_evaluator"]["rollout"][k]


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
        (["validate", "--hessian", "--hessian-probes", "1"], "hessian probes must be >= 2"),
        (["validate", "--hessian", "--hessian-subsets", "0"], "hessian subsets must be a positive integer"),
    ],
)
def test_bad_validate_and_compare_arguments_fail_first(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
