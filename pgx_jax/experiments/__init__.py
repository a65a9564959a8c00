"""What the commands run, built from the stages through a family's simulator.

- configuration and randomness: :mod:`~pgx_jax.experiments.config` (``PipelineConfig``,
  ``ValidateConfig``), :mod:`~pgx_jax.experiments.keys` (a run's key schedule);
- PolicyGradEx: :mod:`~pgx_jax.experiments.estimate` (steps 2-6),
  :mod:`~pgx_jax.experiments.groups` (step 7), :mod:`~pgx_jax.experiments.pipeline` (end to end);
- the estimate against the truth: :mod:`~pgx_jax.experiments.truth`,
  :mod:`~pgx_jax.experiments.agreement`, :mod:`~pgx_jax.experiments.first_order`,
  :mod:`~pgx_jax.experiments.hessian_check`, :mod:`~pgx_jax.experiments.validate`;
- what it costs: :mod:`~pgx_jax.experiments.cost` (FLOPs, env steps);
- the paper's comparisons, side by side over :mod:`~pgx_jax.experiments.groupings`:
  :mod:`~pgx_jax.experiments.compare` and :mod:`~pgx_jax.experiments.meta_rl`.
"""
