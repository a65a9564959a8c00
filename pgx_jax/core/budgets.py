"""Every named budget's numbers, as data: the PPO env steps, environments and per-family fields
(read by :func:`pgx_jax.core.config.budget_config`), the gradient features
(:func:`pgx_jax.experiments.config.budget_features`) and MAML's meta-training and adaptation
(:func:`pgx_jax.rl.maml.maml_config`). The configs that read them check them.
"""

from __future__ import annotations

BUDGETS = ("smoke", "demo", "full")

# Env steps per training run, per family and budget. The demo figures come from CPU
# measurements (2 cores, with updates): reacher ~80k steps/s, halfcheetah ~9k, ant ~15k.
STEPS = {
    "reacher-goals": {"smoke": 20_000, "demo": 3_000_000, "full": 20_000_000},
    "cheetah-vel": {"smoke": 10_000, "demo": 1_000_000, "full": 50_000_000},
    "ant-dir": {"smoke": 10_000, "demo": 1_000_000, "full": 50_000_000},
    "pendulum-physics": {"smoke": 20_000, "demo": 1_000_000, "full": 20_000_000},
}
LOCOMOTION = ("cheetah-vel", "ant-dir", "cheetah-gravity", "hopper-mo", "walker-mo")
for _name in LOCOMOTION[2:]:
    STEPS[_name] = STEPS["cheetah-vel"]
# Locomotion returns are O(100) per episode: scaling rewards by 0.1 keeps value targets O(1)
# (halfcheetah, 1M steps: the v=+3.5 task went from -350 to -182 with it), and 20-step unrolls
# give 5x more updates for the same env steps.
# The pendulum's returns (up to 200) and 200-step episodes call for the same.
FAMILY_FIELDS = {name: {"reward_scale": 0.1, "unroll_length": 20} for name in (*LOCOMOTION, "pendulum-physics")}
# Host-stepped families (pgx_jax.simulators.host), and MT10 in MJX below (a JAX family, but as dear
# per step on the CPU): every env step is a Python call, so fewer environments
# (more updates for the same steps) and budgets set by measured host throughput (2-core CPU,
# policy included): cartpole ~10k steps/s, lunarlander ~15k, Meta-World ~0.8k, highway ~60.
_HOST = {
    "cartpole-physics": ({"smoke": 4_000, "demo": 300_000, "full": 5_000_000}, 20, 0.1, 40),
    "lunarlander-gravity": ({"smoke": 4_000, "demo": 300_000, "full": 5_000_000}, 20, 0.05, 40),
    "highway-density": ({"smoke": 600, "demo": 20_000, "full": 1_000_000}, 10, 1.0, 20),
    "metaworld-mt10": ({"smoke": 2_000, "demo": 100_000, "full": 20_000_000}, 50, 0.1, 20),
}
# MT10 in MJX (pgx_jax.families.mt10_family): budgets for an accelerator; on 2 CPU cores the ten
# tasks step at about 50 env steps/s together (benchmarks/RESULTS.md, issue 34), so a CPU run is a
# smoke run. 20 environments (2 per task) by default; on a GPU pass --num-envs in the thousands.
_HOST["metaworld-mt10-mjx"] = ({"smoke": 1_000, "demo": 100_000, "full": 20_000_000}, 50, 0.1, 20)
for _name, (_steps, _unroll, _scale, _envs) in _HOST.items():
    STEPS[_name] = _steps
    FAMILY_FIELDS[_name] = {"reward_scale": _scale, "unroll_length": _unroll, "num_envs": _envs}
DEFAULT_STEPS = {"smoke": 20_000, "demo": 1_000_000, "full": 50_000_000}
NUM_ENVS = {"smoke": 32, "demo": 256, "full": 2048}


#: Gradient features per budget (:class:`pgx_jax.estimation.features.FeatureConfig` fields): the
#: projection's dimension and theta*'s transitions per task, fitted and held out.
FEATURES = {
    "smoke": {"dim": 64, "transitions": 256, "holdout": 128},
    "demo": {"dim": 400, "transitions": 2048, "holdout": 512},
    "full": {"dim": 400, "transitions": 2048, "holdout": 1024},
}

#: MAML's meta-training and adaptation per budget (:class:`pgx_jax.rl.maml.MAMLConfig` fields;
#: pendulum-physics measurements: benchmarks/RESULTS.md).
MAML = {
    "smoke": {
        "meta_iterations": 4,
        "meta_batch": 4,
        "episodes": 2,
        "outer_epochs": 1,
        "adapt_steps": 2,
        "adapt_episodes": 2,
    },
    "demo": {"meta_iterations": 50, "meta_batch": 10, "episodes": 10, "adapt_steps": 10, "adapt_episodes": 10},
    "full": {"meta_iterations": 1000, "meta_batch": 40, "episodes": 20, "adapt_steps": 200, "adapt_episodes": 20},
}
