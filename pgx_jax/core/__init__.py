"""The bottom layer: the axis legend, type aliases and the task-mask check
(:mod:`pgx_jax.core.types`), every named budget's numbers as data (:mod:`pgx_jax.core.budgets`)
and the frozen, validated PPO and network configuration (:mod:`pgx_jax.core.config`). Imports
nothing else of pgx_jax."""
