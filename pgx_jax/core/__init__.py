"""The bottom layer: the axis legend and type aliases (:mod:`pgx_jax.core.types`) and the frozen,
validated configuration with its named budgets (:mod:`pgx_jax.core.config`). Imports nothing else
of pgx_jax."""
