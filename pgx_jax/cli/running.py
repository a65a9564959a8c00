"""What every command does while it runs: the cluster it joins, the compilation cache, training
on every task (``train``, and the meta-training that ``run``, ``validate``, ``compare`` and ``meta-rl``
start with), progress bars and what the result files record of the run.
"""

from __future__ import annotations

import os
import sys
import time

from pgx_jax.cli.outputs import run_inputs, scalar_log, theta_inputs


def use_compilation_cache(args=None) -> None:
    """The persistent compilation cache (:func:`pgx_jax.runtime.compiles.use_cache`) unless
    ``--no-compile-cache``; a 19 s compile took 3.6 s in the next process."""
    from pgx_jax.runtime import compiles

    compiles.use_cache("" if getattr(args, "no_compile_cache", False) else None)


def join_cluster(args) -> None:
    """Join the other processes (``--coordinator``), before any JAX computation; on processes
    other than 0, silence stdout and progress (process 0 reports). Raises ``ValueError`` on bad
    options and ``RuntimeError`` when the cluster does not form in time."""
    if getattr(args, "coordinator", None) is None:
        from pgx_jax.runtime.distributed import DEFAULT_TIMEOUT_S

        for name in ("num_processes", "process_id"):
            if getattr(args, name, None) is not None:
                raise ValueError(f"--{name.replace('_', '-')} needs --coordinator HOST:PORT")
        if getattr(args, "distributed_timeout", DEFAULT_TIMEOUT_S) != DEFAULT_TIMEOUT_S:
            raise ValueError("--distributed-timeout needs --coordinator (one process waits for no other)")
        return
    from pgx_jax.runtime import distributed

    spec = distributed.ClusterSpec(args.coordinator, args.num_processes, args.process_id, args.distributed_timeout)
    who = "this process" if spec.process_id is None else f"process {spec.process_id} of {spec.num_processes}"
    # JAX aborts the process itself when the cluster does not form or a peer dies later: say first what is tried
    print(f"{who}: joining the cluster at {spec.coordinator} (timeout {spec.timeout_s} s)", file=sys.stderr)
    try:
        distributed.initialize(spec)
    except Exception as e:  # jax raises its runtime's own error types
        raise RuntimeError(
            f"could not join the cluster at {spec.coordinator} as {who} within {spec.timeout_s} s: {first_line(e)}"
        ) from None
    if not distributed.is_main():
        args.no_progress = True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    distributed.check_agree(run_inputs(args))


def train_all_tasks(
    config, family, key, *, show: bool, desc: str, position: int = 0, timings=None, checkpoint=None, start=None,
    progress_fn=None,
):  # fmt: skip
    """:func:`pgx_jax.train_chunked` on every task with an env-step progress bar (``show``), then
    ``check_finite`` (raises ``FloatingPointError``). Returns ``(params, metrics)``;
    ``timings``, ``checkpoint``, ``start`` and ``progress_fn`` as in ``train_chunked``."""
    import jax
    import jax.numpy as jnp

    from pgx_jax import simulators
    from pgx_jax.rl import ppo

    steps = config.num_envs * config.unroll(family.episode_length)
    total = config.num_updates(family.episode_length) * steps
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            unit="step",
            unit_scale=True,
            desc=f"{desc} (compiling)",
            position=position,
            leave=position == 0,
        )

    def on_chunk(done, total_updates):
        if bar is not None:
            bar.set_description(desc)
            bar.update(done * steps - bar.n)

    try:
        params, metrics = simulators.train_chunked(
            config,
            family,
            jnp.ones(family.n_tasks, bool),
            key,
            on_chunk=on_chunk,
            timings=timings,
            checkpoint=checkpoint,
            start=start,
            progress_fn=progress_fn,
        )
        jax.block_until_ready(params)
    finally:
        if bar is not None:
            bar.close()
    ppo.check_finite(metrics, family.task_names)
    return params, metrics


def meta_train_theta(args, family, config, out: str, key, bar, store=None):
    """Meta-train theta* with the key policygradex would use, save it to ``out/theta_star``.
    With a ``store`` (:func:`pgx_jax.cli.outputs.stage_store`) and a simulator with ``resumable_training``, the
    training's state is saved after every chunk (stage ``meta_train_partial``) and ``--resume``
    continues from the last one. Returns ``(theta, seconds of training, compilation and the
    save excluded)``."""

    from pgx_jax.experiments.keys import run_keys
    from pgx_jax.rl import checkpoint
    from pgx_jax.simulators import simulator

    if bar is not None:
        bar.set_description("meta-train")
    k_meta = run_keys(key).meta  # the key policygradex meta-trains with
    t0, compiled = time.perf_counter(), {}
    resumable = store is not None and simulator(family).resumable_training
    start, before = None, 0.0  # training seconds of the interrupted run(s), counted in the total
    if resumable and (saved := store.load("meta_train_partial"))[0]:
        *start, before = saved[1]
        total = config.meta_ppo().num_updates(family.episode_length)
        print(f"pgx-jax: resuming meta-training at update {start[2]} of {total}", file=sys.stderr, flush=True)

    def save(state, parts, done):  # the training's seconds so far: compilation apart, as below
        store.save(
            "meta_train_partial", (state, parts, done, before + time.perf_counter() - t0 - compiled["compile_s"])
        )

    from pgx_jax.runtime import compiles

    with scalar_log(args, out) as log, compiles.stage("meta_train"):
        theta, _ = train_all_tasks(
            config.meta_ppo(),
            family,
            k_meta,
            show=bar is not None,
            desc="  env steps",
            position=1,
            timings=compiled,
            checkpoint=save if resumable else None,
            start=start,
            progress_fn=log.progress_fn("meta_train"),
        )
    seconds = before + time.perf_counter() - t0 - compiled["compile_s"]  # compilation apart, as every other stage
    path = os.path.join(out, "theta_star")
    checkpoint.save_policy(path, theta, config.meta_ppo(), family, seed=args.seed, inputs_sha256=theta_inputs(args))
    if resumable:
        store.discard("meta_train_partial")  # theta* is saved: its training state is obsolete
    return theta, seconds


def compiles_report() -> dict | None:
    """The command's compiling so far (:func:`pgx_jax.runtime.compiles.summary`): seconds by stage and
    part, programs, cache hits, its share of the wall-clock."""
    from pgx_jax.runtime import compiles

    return compiles.summary()


def stage_bar(args, stages: list[str]):
    """A per-stage progress bar (None with ``--no-progress``) and the ``progress`` callback the
    library functions take."""
    if args.no_progress:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=len(stages), desc=stages[0], unit="stage", position=0)

    def progress(stage):
        if stage in stages and stages.index(stage) > bar.n:
            bar.update(stages.index(stage) - bar.n)
        bar.set_description(stage)

    return bar, progress


def distributed_summary() -> dict:
    from pgx_jax.runtime import distributed

    return distributed.summary()


def versions_report():
    from pgx_jax.rl import checkpoint

    return checkpoint.versions()


def stop_workers() -> None:
    """Stop the host environments' worker processes (``--host-workers``) the command started."""
    import sys

    if "pgx_jax.families.host_workers" in sys.modules:
        sys.modules["pgx_jax.families.host_workers"].close_all()


def first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else repr(e)


def process_index() -> int:
    import jax

    return jax.process_index()


def lost_peer(e: BaseException) -> bool:
    """Whether ``e`` is JAX's runtime failing a collective of a multi-process run, or another
    process's failure reported to this one."""
    import jax

    from pgx_jax.runtime.distributed import PeerFailed

    return jax.process_count() > 1 and isinstance(e, (jax.errors.JaxRuntimeError, PeerFailed))
