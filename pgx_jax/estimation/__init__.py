"""PolicyGradEx's estimate, stage by stage: gradient features at the meta-policy
(:mod:`~pgx_jax.estimation.features`), the surrogate solve per subset
(:mod:`~pgx_jax.estimation.surrogate`), the subset evaluators f(S, i)
(:mod:`~pgx_jax.estimation.evaluators`), the affinity matrix (:mod:`~pgx_jax.estimation.affinity`),
clustering (:mod:`~pgx_jax.estimation.cluster`) and the Hessian analysis
(:mod:`~pgx_jax.estimation.hessian`). Stands on :mod:`pgx_jax.rl` and below."""
