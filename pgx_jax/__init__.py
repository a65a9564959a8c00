"""pgx_jax: PolicyGradEx in JAX."""
