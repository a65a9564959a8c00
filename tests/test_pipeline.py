import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pgx_jax.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "reacher"
    argv = ["run", "--budget", "smoke", "--groups", "3", "--out", str(out), "--no-progress", "--seed", "3"]
    # the one-hot setting with the library's defaults (run's own defaults are the task-agnostic demo)
    argv += ["--family", "reacher-goals", "--conditioning", "task_id", "--meta-policy", "full"]
    argv += ["--evaluator", "rollout"]
    assert main(argv) == 0
    return out, argv


@pytest.mark.slow
def test_run_smoke_outputs(smoke_run, reacher):
    out, _ = smoke_run
    r = json.loads((out / "result.json").read_text())
    for key in ("family", "tasks", "affinity", "groups", "per_task_return", "meta_per_task_return", "subsets"):
        assert key in r, key
    for key in ("multitask_per_task_return", "timings", "config", "versions", "machine"):
        assert key in r, key
    n = reacher.n_tasks
    assert r["family"] == "reacher-goals" and r["tasks"] == list(reacher.task_names)
    u = np.asarray(r["affinity"], float)
    assert u.shape == (n, n) and np.all(np.isfinite(u)) and np.allclose(u, u.T)
    groups = r["groups"]
    assert len(groups) == 3 and sorted(sum(groups, [])) == list(range(n))  # a partition
    assert set(r["per_task_return"]) == set(r["meta_per_task_return"]) == set(reacher.task_names)
    assert np.all(np.isfinite(list(r["meta_per_task_return"].values())))  # theta* beside the group policies
    # the full theta* is the multitask policy with the groups' per-task budget: not trained twice
    assert r["config"]["meta_policy"] == "full" and r["multitask_per_task_return"] == r["meta_per_task_return"]
    masks = np.asarray(r["subset_masks"], bool)
    assert masks.shape == (r["subsets"], n)
    cov = masks.T.astype(int) @ masks.astype(int)
    assert cov[~np.eye(n, dtype=bool)].min() >= 1  # every pair covered
    est = np.asarray([[np.nan if v is None else v for v in row] for row in r["estimates"]])
    assert np.all(np.isfinite(est[masks])) and np.all(np.isnan(est[~masks]))
    for stage in ("meta_train", "features", "solve", "evaluate", "train_groups"):
        assert r["timings"][stage] > 0
    assert (out / "affinity.png").stat().st_size > 1000
    assert (out / "theta_star" / "meta.json").exists()


def test_run_defaults_are_the_task_agnostic_demo_and_the_other_commands_keep_the_library_defaults():
    """``pgx-jax run`` alone is the newcomer's demo (cli.RUN_DEFAULTS: task-agnostic pendulum, the
    early theta* that conditioning calls for, the alignment evaluator and k by the eigengap, as the
    protocol chose); validate and compare keep task_id, the full theta*, rollout and the silhouette's
    auto k, so a study's settings never change silently."""
    from pgx_jax.cli.args import RUN_DEFAULTS, build_parser
    from pgx_jax.cli.prepare import build_run

    run = build_parser().parse_args(["run"])
    assert {k: vars(run)[k] for k in RUN_DEFAULTS} == RUN_DEFAULTS
    family, config = build_run(run)
    assert family.name == "pendulum-physics" and config.ppo.network.conditioning == "none"
    assert (config.meta_policy, config.evaluator, config.groups, config.k_rule) == (
        "early-0.02",
        "alignment",
        "auto",
        "eigengap",
    )
    for command in ("validate", "compare"):
        family, config = build_run(build_parser().parse_args([command]))
        assert family.name == "reacher-goals" and config.ppo.network.conditioning == "task_id"
        assert (config.meta_policy, config.evaluator, config.groups, config.k_rule) == (
            "full",
            "rollout",
            "auto",
            "silhouette",
        )
        # --conditioning none alone brings the early theta*; an explicit --meta-policy wins
        _, blind = build_run(build_parser().parse_args([command, "--conditioning", "none"]))
        assert blind.meta_policy == "early-0.02"
        _, chosen = build_run(build_parser().parse_args([command, "--conditioning", "none", "--meta-policy", "full"]))
        assert chosen.meta_policy == "full"
    assert vars(build_parser().parse_args(["train"]))["conditioning"] == "task_id"


def test_resume_is_deterministic(smoke_run):
    """Same seed, theta* reused from the checkpoint: identical affinity and groups."""
    out, argv = smoke_run
    first = json.loads((out / "result.json").read_text())
    assert main(argv + ["--resume"]) == 0
    second = json.loads((out / "result.json").read_text())
    assert second["affinity"] == first["affinity"] and second["groups"] == first["groups"]
    for key in ("per_task_return", "meta_per_task_return", "multitask_per_task_return"):
        assert second[key] == first[key], key
    assert "meta_train" not in second["timings"]


def test_resume_refuses_a_theta_star_of_another_meta_policy(smoke_run, capsys):
    out, argv = smoke_run
    assert main(argv + ["--resume", "--meta-policy", "early-0.5"]) == 2
    assert "was meta-trained with another config" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--groups", "10"], "--groups 10 must be in [1, 9]"),
        (["--groups", "0"], "--groups 0 must be in [1, 9]"),
        (["--groups", "many"], "--groups must be an integer or 'auto'"),
        (["--subsets", "3"], "cannot cover all 36 task pairs"),
        (["--subsets", "10000"], "subsets m = 10000 exceeds the 126 distinct subsets of size 4 of 9 tasks"),
        (["--dim", "0"], "--dim must be >= 1"),
        (["--evaluator", "oracle"], "argument --evaluator: invalid choice: 'oracle'"),
        (["--cluster", "kmeans"], "argument --cluster: invalid choice: 'kmeans'"),
        (["--resume"], "--resume: nothing to resume at"),
    ],
)
def test_run_bad_input_fails_before_training(extra, message, tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "--family", "reacher-goals", "--budget", "smoke", "--out", str(out)] + extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


SHARDED = textwrap.dedent(
    """
    import sys, warnings, dataclasses
    warnings.filterwarnings("ignore")
    sys.path.insert(0, {tests!r})
    import jax, jax.numpy as jnp, numpy as np
    from brax import envs
    from conftest import _push_reward
    from pgx_jax.families import custom_family
    from pgx_jax.core.config import PPOConfig
    from pgx_jax.estimation.features import FeatureConfig
    from pgx_jax.rl.networks import init_agent
    from pgx_jax.experiments.config import PipelineConfig
    from pgx_jax.experiments.estimate import estimate
    from pgx_jax.estimation.affinity import sample_subsets, AffinityConfig
    assert len(jax.local_devices()) == 4, jax.local_devices()
    fam = custom_family("fast-push", envs.get_environment("fast"), {{"w": jnp.array([1.0, -1.0, 1.0, -1.0])}},
                        _push_reward, episode_length=10)
    params = init_agent(PPOConfig(total_env_steps=1).network, fam.obs_size, fam.action_size, jax.random.PRNGKey(0))
    masks = sample_subsets(0, 4, AffinityConfig(subset_size=2, min_pair_coverage=1))  # 6 subsets: padded to 8
    for ev in ("loss", "rollout"):
        cfg = PipelineConfig(ppo=PPOConfig(total_env_steps=80, num_envs=8),
                             features=FeatureConfig(dim=16, transitions=60, holdout=20), evaluator=ev, eval_episodes=2)
        _, sharded, _ = estimate(cfg, fam, params, masks, jax.random.PRNGKey(1))
        _, single, _ = estimate(cfg, fam, params, masks, jax.random.PRNGKey(1), devices=jax.local_devices()[:1])
        np.testing.assert_allclose(sharded, single, rtol=1e-4, atol=1e-5, equal_nan=True)
        assert np.isfinite(sharded[masks]).all()
        print(ev, "ok")
    """
)


@pytest.mark.slow
def test_sharded_estimates_equal_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    script = SHARDED.format(tests=os.path.join(ROOT, "tests"))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loss ok" in proc.stdout and "rollout ok" in proc.stdout


def test_meta_policy_sets_what_theta_star_is_trained_with(reacher):
    from pgx_jax.experiments.config import pipeline_config

    config = pipeline_config("demo", reacher)
    assert config.meta_policy == "full" and config.meta_ppo() == config.ppo
    early = pipeline_config("demo", reacher, meta_policy="early-0.05").meta_ppo()
    assert early.total_env_steps == int(0.05 * config.ppo.total_env_steps)
    assert early.num_updates(reacher.episode_length) < config.ppo.num_updates(reacher.episode_length)
    assert pipeline_config("demo", reacher, meta_policy="entropy-0.01").meta_ppo().entropy_coef == 0.01
    for bad in ("early", "early-1.5", "entropy--1", "entropy-inf", "best"):
        with pytest.raises(ValueError, match=f"unknown meta_policy '{bad}'"):
            pipeline_config("demo", reacher, meta_policy=bad)


def test_pipeline_config_sets_the_conditioning_of_every_policy(reacher):
    from pgx_jax.experiments.config import pipeline_config

    assert pipeline_config("demo", reacher).ppo.network.conditioning == "task_id"
    blind = pipeline_config("demo", reacher, conditioning="none")
    assert blind.ppo.network.conditioning == blind.meta_ppo().network.conditioning == "none"
    assert blind.meta_policy == "early-0.02"  # DEFAULT_META_POLICY: the theta* that sees a task-agnostic split
    assert pipeline_config("demo", reacher, conditioning="none", meta_policy="full").meta_policy == "full"
    assert pipeline_config("demo", reacher, conditioning="none", meta_policy="auto").meta_policy == "early-0.02"
    # the conditioning also reaches an overriding ppo config's network
    custom = pipeline_config("smoke", reacher).ppo
    assert pipeline_config("demo", reacher, conditioning="none", ppo=custom).ppo.network.conditioning == "none"
    with pytest.raises(ValueError, match="unknown conditioning 'goal'"):
        pipeline_config("demo", reacher, conditioning="goal")
