"""What the commands run, built from the stages through a family's simulator: PolicyGradEx end to
end (:mod:`~pgx_jax.experiments.pipeline`), one policy per group
(:mod:`~pgx_jax.experiments.groups`), the estimate against the truth
(:mod:`~pgx_jax.experiments.validate`), the paper's comparison of groupings
(:mod:`~pgx_jax.experiments.compare`) and its meta-RL protocol (:mod:`~pgx_jax.experiments.meta_rl`)."""
