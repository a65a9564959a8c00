"""Reinforcement learning on a task family, pure JAX: the networks and the Gaussian policy
(:mod:`~pgx_jax.rl.networks`), rollouts with episodes keyed by (task, episode)
(:mod:`~pgx_jax.rl.rollout`), policy evaluation (:mod:`~pgx_jax.rl.evaluate`), multitask PPO
(:mod:`~pgx_jax.rl.ppo`), MAML (:mod:`~pgx_jax.rl.maml`), what the two share
(:mod:`~pgx_jax.rl.training`) and checkpoints
(:mod:`~pgx_jax.rl.checkpoint`). Stands on :mod:`pgx_jax.core`, :mod:`pgx_jax.runtime` and
:mod:`pgx_jax.families`."""
