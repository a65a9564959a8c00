"""`validate` end to end at the smoke budget on 4 reacher goals: in process with every option,
killed twice and resumed, and in two processes against one; `compare` on the same tasks; then
the bad arguments of `validate` and `compare`. One file, in this order, on purpose:
pytest-xdist's loadfile runs it on one worker, so the in-process run fills the session's
compilation cache first and the seven subprocesses and `compare` after it compile only what is
new to them (the half-batch programs of the two-process run, compare's group trainings).

The four runs are marked ``user_xla_flags`` (tests/conftest.py): each runs in a child pytest
under the XLA flags of a user's run, not the suite's optimisation level 0, because their
claims of equality (the truths' evaluation against the estimate's, a killed run resumed against
an uninterrupted one, two processes against one) are claims about the programs a user runs;
the four share that child's flags, so the cache is still filled in this order."""

import json

import numpy as np
import pytest
from cli_processes import one_and_two, validate

from pgx_jax.cli import main


class _Spy:
    """Records the host-level arguments of the calls that evaluate a policy (the estimate's rollout
    evaluator, each truth's evaluation) and of the KL of every estimated policy, and passes them on."""

    def __init__(self, monkeypatch):
        from pgx_jax.experiments import validate as validate_mod
        from pgx_jax.simulators.jitted import JaxSimulator

        self.estimates, self.truths, self.kls = [], [], []
        est, truth, kl = (
            JaxSimulator.estimates_on_subsets,
            JaxSimulator.policies_on_subsets_timed,
            validate_mod.subset_kl,
        )

        def on_estimate(sim, *args, **kwargs):
            self.sim = sim
            self.estimates.append((args, kwargs))
            return est(sim, *args, **kwargs)

        def on_truth(sim, *args, **kwargs):
            self.truths.append((args, kwargs))
            return truth(sim, *args, **kwargs)

        def on_kl(*args):
            self.kls.append(args)
            return kl(*args)

        monkeypatch.setattr(JaxSimulator, "estimates_on_subsets", on_estimate)
        monkeypatch.setattr(JaxSimulator, "policies_on_subsets_timed", on_truth)
        monkeypatch.setattr(validate_mod, "subset_kl", on_kl)


def _key_bits(key) -> np.ndarray:
    import jax

    return np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key)


def _check_speedup(sp: dict, truths: dict) -> None:
    """``speedup`` recomputed from its reported parts by cost_accounting's documented formulas:
    the estimate's cost is features + solves + evaluation (meta-training apart), a truth's is its
    training + evaluation of every subset, the speedup is the truth's cost over the estimate's
    (the ``full`` one also with meta-training added to the estimate's)."""
    est = sp["estimation"]
    assert est["wall_s"] == pytest.approx(sum(est["wall_s_per_stage"].values()), rel=1e-12)
    assert set(est["flops_per_stage"]) == {"features", "solve", "evaluate"}
    assert est["flops"] == pytest.approx(sum(est["flops_per_stage"].values()), rel=1e-12)
    subsets = len(truths["full"]["env_steps_per_subset"])
    assert est["solve_flops_per_subset"] == pytest.approx(est["flops_per_stage"]["solve"] / subsets, rel=1e-12)
    for kind, truth in truths.items():
        entry = sp["by_truth"][kind]
        ref = entry["reference"]
        assert ref["flops"] == pytest.approx(
            ref["flops_per_stage"]["train"] + ref["flops_per_stage"]["evaluate"], rel=1e-12
        )
        assert entry["flops"] == pytest.approx(ref["flops"] / est["flops"], rel=1e-12)
        assert entry["wall"] == pytest.approx(ref["wall_s"] / est["wall_s"], rel=1e-12)
        assert f"({max(truth['env_steps_per_subset'])} env steps per subset at most)" in ref["includes"]
    full = sp["by_truth"]["full"]
    meta_flops, meta_wall = est["meta_training_flops"], est["meta_training_wall_s"]
    assert full["flops_with_meta_training"] == pytest.approx(full["reference"]["flops"] / (est["flops"] + meta_flops))
    assert full["wall_with_meta_training"] == pytest.approx(full["reference"]["wall_s"] / (est["wall_s"] + meta_wall))
    assert "flops_with_meta_training" not in sp["by_truth"]["finetune"]  # fine-tuning needs theta* too
    # the same network and PPO update: the two truths' training FLOPs per env step agree (full
    # training: 6 x 9,600 steps from scratch; fine-tuning: 6 x 1,600 steps from theta*; 2.6e-4
    # apart here), so the FLOP counts follow the env steps each truth reports
    per_step = {
        kind: sp["by_truth"][kind]["reference"]["flops_per_stage"]["train"] / sum(truth["env_steps_per_subset"])
        for kind, truth in truths.items()
    }
    assert per_step["full"] == pytest.approx(per_step["finetune"], rel=1e-2), per_step


def _check_hessian(h: dict, step_relative, theta_norm: float) -> None:
    """The Hessian analysis recomputed from its reported parts: the bound by its formula
    (``h["formula"]``), the means over subsets, the standard errors of the means over subsets
    from the per-subset ones (2 probes, 2 subsets: se = |x_1 - x_2| / 2 per subset, and the
    mean's se is half the sum or half the difference of theirs), and the step the analysed
    policies take (summed over layers: the whole step, (step_relative ||theta*||)^2)."""
    assert h["objective"] == "ppo" and h["subsets_analysed"] == 2 and h["probes"] == 2
    assert set(h["by_objective"]) == {"ppo", "log_likelihood"} and h["bound"] == h["by_objective"]["ppo"]["bound"]
    for o in h["by_objective"].values():
        traces, sq, n = o["traces"]["estimated"], np.array(o["sq_dist"]), np.array(o["n"])
        tr, c = np.array(traces["per_subset"]), np.array(o["loss_range"]["per_subset"])
        assert tr.shape == sq.shape == (2, len(h["layers"]))
        bound = np.sqrt(c) * np.sum(np.sqrt(np.maximum(tr, 0) * sq / n[:, None]), 1)
        np.testing.assert_allclose(o["bound"]["per_subset"], bound, rtol=1e-5)
        np.testing.assert_allclose(sq.sum(1), (np.array(step_relative[:2]) * theta_norm) ** 2, rtol=1e-4)
        for point in ("estimated", "theta_star"):
            t = o["traces"][point]
            np.testing.assert_allclose(t["mean"], np.mean(t["per_subset"], 0), rtol=1e-5, atol=1e-6)
            se = np.array(t["per_subset_se"])
            assert np.all(se > 0)
            both = np.stack([(se[0] + se[1]) / 2, np.abs(se[0] - se[1]) / 2])
            assert np.all(np.min(np.abs(both - np.array(t["se"])), 0) <= 1e-5 * (1 + both.max(0))), (t["se"], both)
        assert np.isfinite(o["observed_gap"]["mean"]) and np.all(c > 0)


def _check_kl(spy: _Spy, reported) -> None:
    """The KL of every estimated policy from theta* (exact, Gaussian) against its second-order
    expansion sum_a (J_mu delta)_a^2 / (2 sigma_a^2) + (J_log_sigma delta)_a^2, computed here with
    forward-mode derivatives on the same states: a step of 1% of ||theta*|| leaves a third-order
    remainder of a few percent."""
    import jax
    import jax.numpy as jnp

    from pgx_jax.rl import networks
    from pgx_jax.rl.networks import flat_actor

    (net, family, theta_star, thetas, masks, obs, valid) = spy.kls[0]  # the estimate's (then the fine-tune's)
    theta0, unravel = flat_actor(theta_star)
    x = networks.net_input(net, theta_star.normalizer, obs, family.n_tasks)  # [N, B, O]

    def dist(theta):
        return networks.policy_apply(net, family.action_size, unravel(theta), x)

    weight = np.asarray(valid) / np.maximum(np.asarray(valid).sum(1, keepdims=True), 1.0)
    second = []
    for s in range(np.shape(masks)[0]):
        delta = flat_actor(jax.tree.map(lambda a, s=s: a[s], thetas))[0] - theta0
        (_, log_std), (d_mean, d_log_std) = jax.jvp(dist, (theta0,), (delta,))
        per_state = jnp.sum(jnp.square(d_mean) / (2 * jnp.exp(2 * log_std)) + jnp.square(d_log_std), -1)
        per_task = np.sum(weight * np.asarray(per_state, np.float64), 1)
        second.append(per_task[np.asarray(masks[s])].mean())
    np.testing.assert_allclose(reported, second, rtol=0.05)


def _check_rollout_se(spy: _Spy, reported_se, reported_scores) -> None:
    """The rollout evaluator's f(S, i) and standard error from the episodes themselves: episode j
    of a task is the same draw whatever the number of episodes, so with 2 episodes r_1 = 2 f - r_0
    where r_0 is the one-episode return, and the standard error is std(r_0, r_1) / sqrt 2."""
    args, kwargs = spy.estimates[0]
    assert kwargs["episodes"] == 2
    two = spy.sim.estimates_on_subsets(*args, **kwargs)
    one = spy.sim.estimates_on_subsets(*args, **{**kwargs, "episodes": 1})
    r0, mean = np.asarray(one["return"], np.float64), np.asarray(two["return"], np.float64)
    r1 = 2 * mean - r0
    se = np.std(np.stack([r0, r1]), 0, ddof=1) / np.sqrt(2)
    masks = np.isfinite(mean)
    np.testing.assert_allclose(np.array(reported_scores, float)[masks], mean[masks], rtol=1e-6)
    np.testing.assert_allclose(np.array(reported_se, float)[masks], se[masks], rtol=1e-3, atol=1e-5)
    assert np.all(np.abs(r1 - r0)[masks] > 1e-4)  # the episodes are different draws


def _check_same_evaluation(spy: _Spy, n_truths: int) -> None:
    """The truths evaluate with the estimate's evaluation key, end to end: every truth training's
    evaluation got the key the estimate's rollout evaluator got, and theta* itself scored through
    the estimate's path (a step of zero) and through the truth's path gets the same returns on
    every task of every subset, bit for bit; under another key it would not (by 0.2 on reacher)."""
    import jax
    import jax.numpy as jnp

    (theta_star, feats, betas, scales, masks, key), kwargs = spy.estimates[0]
    assert len(spy.truths) == n_truths
    keys = [args[5] for args, _ in spy.estimates] + [args[2] for args, _ in spy.truths]  # (..., masks, key)
    for k in keys:
        np.testing.assert_array_equal(_key_bits(k), _key_bits(key))
    (_, truth_masks, truth_key), truth_kwargs = spy.truths[0]
    np.testing.assert_array_equal(np.asarray(truth_masks), np.asarray(masks))
    zero = jnp.zeros_like(betas)
    via_estimate = spy.sim.estimates_on_subsets(theta_star, feats, zero, scales, masks, key, **kwargs)["return"]
    stacked = jax.tree.map(lambda x: jnp.stack([x] * np.shape(masks)[0]), theta_star)
    via_truth = spy.sim.policies_on_subsets(stacked, masks, truth_key, **truth_kwargs)["return"]
    m = np.asarray(masks, bool)
    np.testing.assert_array_equal(np.asarray(via_estimate)[m], np.asarray(via_truth)[m])
    other = spy.sim.policies_on_subsets(stacked, masks, jax.random.fold_in(truth_key, 1), **truth_kwargs)["return"]
    assert np.abs(np.asarray(other)[m] - np.asarray(via_truth)[m]).max() > 1e-3  # the key decides the episodes


@pytest.mark.slow
@pytest.mark.user_xla_flags
def test_validate_smoke_writes_complete_json(tmp_path, four_goals, capsys, monkeypatch):
    """Every option at smoke, and what the report's figures are checked against: the speedups
    recomputed from their parts, the Hessian bound from its formula, the KL of every estimated
    policy against its second-order expansion, the rollout evaluator's standard errors from the
    episodes, and the truths' evaluation against the estimate's (the same key, the same returns
    for the same policy)."""
    import jax

    from pgx_jax.rl.networks import flat_actor

    spy = _Spy(monkeypatch)
    out = tmp_path / "v"
    argv = ["validate", "--budget", "smoke", "--tasks-file", four_goals, "--groups", "2", "--out", str(out)]
    hessian = ["--hessian", "--hessian-probes", "2", "--hessian-subsets", "2"]
    assert main(argv + ["--replicates", "2", "--truth", "both", "--no-progress", *hessian]) == 0
    v = json.loads((out / "validation.json").read_text())
    theta_star = spy.estimates[0][0][0]
    theta_norm = float(jax.numpy.linalg.norm(flat_actor(theta_star)[0]))
    step = v["estimate"]["step_relative"]
    assert len(step["per_subset"]) == v["subsets"] and 0 < step["min"] <= step["max"] < 1
    _check_hessian(v["hessian"], step["per_subset"], theta_norm)
    assert set(v["approx_error"]) == {"0.001", "0.005", "0.01", "0.05"}
    for kind in ("random", "random_vs_logp"):
        errs = [v["approx_error"][r][kind] for r in ("0.001", "0.005", "0.01", "0.05")]
        assert all(0 <= a < b for a, b in zip(errs, errs[1:], strict=False)), errs  # shrinks with the step
    assert v["versions"]["pgx_jax_commit"] != ""
    kl = v["estimate"]["kl"]
    assert len(kl["per_subset"]) == v["subsets"] and kl["mean"] == pytest.approx(np.mean(kl["per_subset"]))
    _check_kl(spy, kl["per_subset"])
    se = v["estimate"]["rollout_scores_se"]
    rollout = v["truths"]["full"]["by_evaluator"]["rollout"]
    _check_rollout_se(spy, se["per_pair"], rollout["estimated_scores"])
    _check_same_evaluation(spy, n_truths=4)  # two truths, two replicates each
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
        diff = again[masks] - true[masks]
        assert rep["score_noise_sd"] == pytest.approx(np.sqrt(np.mean(diff**2) / 2))  # its documented formula
        assert truth["self_agreement"]["score_noise_sd"] == rep["score_noise_sd"]
        for key in ("ami", "nmi_chance", "spearman_within_task_null_sd", "tasks_used"):
            assert key in truth and key in truth["by_evaluator"]["gain"]
        assert truth["tasks_used"] <= truth["by_evaluator"]["rollout"]["tasks_total"] <= 4
        for png in (f"truth_scatter_{kind}.png", f"affinity_true_{kind}.png"):
            assert (out / png).stat().st_size > 1000
    # full training gives every task of a subset the per-task budget of any group
    full, ft = v["truths"]["full"], v["truths"]["finetune"]
    assert len(set(full["env_steps_per_task"])) == 1 and len(set(ft["env_steps_per_subset"])) == 1
    np.testing.assert_array_equal(full["env_steps_per_subset"], full["env_steps_per_task"][0] * masks.sum(1))
    assert "kl" in ft and "kl" not in full
    ft_kl = np.array(ft["kl"]["per_subset"])  # fine-tuning's KL, from the same states (the second KL call)
    assert len(spy.kls) == 2 and ft_kl.shape == (v["subsets"],) and np.all(ft_kl > 0)
    sp = v["speedup"]
    assert sp["against"] == "full" and sp["flops"] == sp["by_truth"]["full"]["flops"]
    assert sp["wall"] == sp["by_truth"]["full"]["wall"]
    assert sp["estimation"]["linesearch_trips_per_iteration"] is None  # newton
    _check_speedup(sp, v["truths"])
    solve = v["estimate"]["solve"]
    assert solve["solver"] == "newton" and len(solve["grad_ratio"]["per_subset"]) == v["subsets"]
    assert solve["kl"]["max"] > 0
    for png in ("approx_error.png", "affinity_estimated.png"):
        assert (out / png).stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "[full] speedup in FLOPs" in printed and "[hessian, log_likelihood] bound" in printed
    assert (
        f"[full] speedup in FLOPs / wall-clock (compile excluded) | {sp['flops']:.1f}x / {sp['wall']:.1f}x" in printed
    )


@pytest.mark.slow
@pytest.mark.user_xla_flags
def test_validate_killed_in_meta_training_and_in_the_truth_resumes_to_the_same_result(tmp_path, four_goals):
    reference = validate(tmp_path / "ref", "--tasks-file", four_goals)
    assert reference.returncode == 0, reference.stderr[-2000:]
    out = tmp_path / "killed"
    # SIGKILL right after meta-training saved its second chunk: no theta* yet
    run = validate(out, "--tasks-file", four_goals, kill_after="meta_train_partial:2")
    assert run.returncode == -9, run.stderr[-2000:]
    assert not (out / "theta_star").exists() and (out / "stages" / "meta_train_partial.npz").exists()
    # resumed: meta-training continues from there (not from update 0); killed again right after
    # the estimate is saved, before the truth trains
    run = validate(out, "--tasks-file", four_goals, "--resume", kill_after="estimate")
    assert run.returncode == -9, run.stderr[-2000:]
    assert "resuming meta-training at update " in run.stderr and "at update 0 " not in run.stderr, run.stderr[-2000:]
    assert (out / "theta_star" / "meta.json").exists() and not (out / "validation.json").exists()
    assert not (out / "stages" / "meta_train_partial.npz").exists()  # obsolete once theta* is saved
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


@pytest.mark.slow
@pytest.mark.user_xla_flags
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


@pytest.mark.slow
@pytest.mark.user_xla_flags
def test_compare_smoke_uses_equal_budgets(tmp_path, four_goals):
    out = tmp_path / "c"
    argv = ["compare", "--budget", "smoke", "--tasks-file", four_goals, "--groups", "2", "--seeds", "1"]
    argv += ["--random-draws", "2", "--groupings", "multitask,random,policygradex", "--out", str(out), "--no-progress"]
    assert main([*argv, "--save-policies"]) == 0
    c = json.loads((out / "comparison.json").read_text())
    # every grouping's policies saved as run saves its groups; one reloads to its returns
    saved = sorted(p.name for p in (out / "policies" / "seed0").iterdir())
    assert saved == ["multitask", "per_task", "policygradex", "random-0", "random-1"]
    import jax

    import pgx_jax

    family, groups, index = pgx_jax.load_groups(out / "policies" / "seed0" / "policygradex")
    assert [g["task_ids"] for g in groups] == c["groupings"]["policygradex"]["groups"][0]
    assert len(pgx_jax.load_groups(out / "policies" / "seed0" / "per_task")[1]) == family.n_tasks
    key = jax.numpy.asarray(index["evaluation"]["key"], jax.numpy.uint32)
    returns = np.array(c["groupings"]["policygradex"]["per_task_return"][0], float)
    for g in groups:
        again = pgx_jax.evaluate(
            g["params"], family, g["task_ids"], key, index["evaluation"]["episodes"], network=g["config"].network
        )
        np.testing.assert_allclose(again, returns[g["task_ids"]], rtol=1e-4, atol=1e-3)
    assert list(c["groupings"]) == ["multitask", "per_task", "random", "policygradex"]
    steps = {s for g in c["groupings"].values() for seed in g["env_steps_per_task"] for draw in seed for s in draw}
    assert len(steps) == 1 and steps.pop() > 0  # every group of every grouping: the same steps per task
    # normalised returns recomputed from the raw ones and the two anchors (random policy 0, best
    # single-task policy over seeds 1), for every grouping, and the improvements from them
    low, high = np.array(c["random_policy_return"], float), np.array(c["best_single_task_return"], float)
    np.testing.assert_array_equal(high, np.max(np.array(c["groupings"]["per_task"]["per_task_return"], float), 0))
    for name, g in c["groupings"].items():
        r = np.array(g["per_task_return"], float)
        np.testing.assert_allclose(g["normalized"], (r - low) / (high - low), rtol=1e-6, err_msg=name)
        assert g["mean_normalized"]["mean"] == pytest.approx(np.mean(g["normalized"]))
        assert g["mean_return"]["mean"] == pytest.approx(r.mean())
    ours = c["groupings"]["policygradex"]
    for name in ("multitask", "per_task", "random"):
        theirs = c["groupings"][name]
        for field, key in (("improvement", "mean_normalized"), ("improvement_return", "mean_return")):
            diff = ours[key]["mean"] - theirs[key]["mean"]
            assert c[field][name]["difference"] == pytest.approx(diff)
            assert c[field][name]["relative"] == pytest.approx(diff / abs(theirs[key]["mean"]))
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
        (["compare", "--evaluator", "magic"], "--evaluator: invalid choice: 'magic'"),
        (
            ["validate", "--truth", "oracle"],
            "--truth: invalid choice: 'oracle' (choose from 'full', 'finetune', 'both')",
        ),
        (["compare", "--truth", "oracle"], "--truth: invalid choice: 'oracle'"),
        (
            ["validate", "--conditioning", "task"],
            "--conditioning: invalid choice: 'task' (choose from 'task_id', 'none')",
        ),
        (["run", "--eval-episodes", "0"], "--eval-episodes must be >= 1"),
        (["validate", "--hessian", "--hessian-probes", "1"], "hessian probes must be >= 2"),
        (["validate", "--hessian", "--hessian-subsets", "0"], "hessian subsets must be a positive integer"),
    ],
)
def test_bad_validate_and_compare_arguments_fail_first(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
