"""Running a computation, not what it computes: splitting batch axes over devices
(:mod:`~pgx_jax.runtime.sharding`) and processes (:mod:`~pgx_jax.runtime.distributed`), stage files
for ``--resume`` (:mod:`~pgx_jax.runtime.stages`, :mod:`~pgx_jax.runtime.codec`), result files and
plots (:mod:`~pgx_jax.runtime.results`), provenance, compile-time accounting and FLOP counts.
Imports only :mod:`pgx_jax.core`."""
