"""Side effects at the edges: atomic JSON, Markdown tables and plots for the CLI and benchmarks."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from pgx_jax.runtime.distributed import is_main


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.floating):
            x = np.where(np.isfinite(x), x, np.nan).astype(object)
            x[np.equal(x, None)] = None
            return _jsonable(np.asarray(x).tolist())
        return x.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return None  # JSON has no NaN; a missing value is null
    return x


def _write_atomic(path: str | os.PathLike, text: str, suffix: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never half-written. Only
    process 0 of a multi-process run writes (:func:`pgx_jax.runtime.distributed.is_main`)."""
    if not is_main():
        return
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    """Save a matplotlib figure atomically (process 0 only) and close it."""
    import matplotlib.pyplot as plt

    try:
        if is_main():
            path = os.fspath(path)
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
            os.close(fd)
            try:
                fig.savefig(tmp, dpi=dpi)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
    finally:
        plt.close(fig)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as JSON atomically (temporary file, then rename). NaN becomes null."""
    _write_atomic(path, json.dumps(_jsonable(data), indent=2, allow_nan=False), ".json")


def write_markdown(path: str | os.PathLike, text: str) -> None:
    """Write a Markdown report atomically and echo it to stdout."""
    _write_atomic(path, text, ".md")
    print(text)


def machine() -> dict[str, Any]:
    """The machine a figure was measured on."""
    import jax

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (``ru_maxrss``: KiB on Linux, bytes on
    macOS)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def provenance(info: dict[str, Any]) -> str:
    """One Markdown line naming the machine and package versions of ``{"machine", "versions"}``,
    and whether the code had uncommitted changes (``pgx_jax_clean``: :func:`pgx_jax.rl.checkpoint.versions`)."""
    m = info["machine"]
    v = info["versions"]
    versions = ", ".join(f"{k} {x}" for k, x in v.items() if k not in ("pgx_jax_clean", "pgx_jax_diff_sha256"))
    line = f"Machine: {m['platform']}, {m['cpu_count']} CPUs, JAX backend {m['jax_backend']}. Versions: {versions}."
    if v.get("pgx_jax_clean") is False:
        line += (
            f" **Made by uncommitted code** (`--allow-dirty`; diff sha256 {v.get('pgx_jax_diff_sha256')}): "
            "not reproducible from the commit alone."
        )
    elif "pgx_jax_clean" not in v:
        line += " (Written before results recorded whether the tree was clean.)"
    return line


def parse_benchmark_args(parser) -> Any:
    """``parser.parse_args()`` for a benchmark whose files may be cited: :func:`parse_benchmark_args_from`."""
    return parse_benchmark_args_from(parser, None)


def parse_benchmark_args_from(parser, argv) -> Any:
    """``parser.parse_args(argv)`` with ``--allow-dirty`` added; code with uncommitted changes is
    refused without it (``parser.error``: exit status 2, before any work;
    :func:`pgx_jax.runtime.provenance.require_clean`); with it, the files say the code was dirty
    (:func:`provenance`)."""
    from pgx_jax.runtime.provenance import DirtyTreeError, require_clean

    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="run from code with uncommitted changes (the results then say so and are not citable)",
    )
    args = parser.parse_args(argv)
    try:
        require_clean(args.allow_dirty)
    except DirtyTreeError as e:
        parser.error(str(e))
    return args


def write_table_report(
    stem: str | os.PathLike, report: dict[str, Any], title: str, intro: str, header: Sequence[str], rows
) -> None:
    """A benchmark's two outputs: ``stem.json`` (``report``, which must hold ``machine`` and
    ``versions``) and ``stem.md`` (``# title``, ``intro``, the table of ``header`` and ``rows``
    and the :func:`provenance` line of ``report``), each written atomically."""
    write_json(f"{os.fspath(stem)}.json", report)
    text = f"# {title}\n\n{intro.strip()}\n\n" + markdown_table(header, rows) + "\n" + provenance(report) + "\n"
    write_markdown(f"{os.fspath(stem)}.md", text)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v).replace("|", "\\|")  # a literal | would end the cell

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (works headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(path: str | os.PathLike, steps: np.ndarray, returns: np.ndarray, names, title: str) -> None:
    """Per-task episode return vs env steps (``returns`` float [U, N], NaN gaps skipped) as PNG."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, name in enumerate(names):
        ok = np.isfinite(returns[:, i])
        ax.plot(steps[ok], returns[ok, i], label=name, lw=1.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_affinity(path: str | os.PathLike, u: np.ndarray, groups, names, title: str) -> None:
    """Heatmap of the affinity ``u`` [N, N], rows and columns ordered by group, borders drawn."""
    plt = _pyplot()

    order = [i for g in groups for i in g]
    v = np.asarray(u)[np.ix_(order, order)]
    n = len(order)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * n, 0.8 + 0.45 * n))
    lim = float(np.max(np.abs(v))) or 1.0
    im = ax.imshow(v, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(n), [names[i] for i in order], rotation=90, fontsize=8)
    ax.set_yticks(range(n), [names[i] for i in order], fontsize=8)
    edge = -0.5
    for g in groups:
        ax.add_patch(plt.Rectangle((edge, edge), len(g), len(g), fill=False, lw=2, ec="black"))
        edge += len(g)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label="affinity U[i, j]")
    fig.tight_layout()
    save_figure(fig, path)


def plot_approx_error(path: str | os.PathLike, approx: dict, title: str) -> None:
    """Relative first-order error vs relative step size (log-log), per kind of direction."""
    plt = _pyplot()
    sizes = sorted(approx, key=float)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for kind in ("surrogate", "random"):
        pct = [approx[r][kind] * 100 for r in sizes]
        ax.plot([float(r) * 100 for r in sizes], pct, "o-", label=f"{kind} directions")
    ax.axhline(1.0, color="gray", ls=":", lw=1, label="1% target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step ||delta|| / ||theta*|| (%)")
    ax.set_ylabel("relative error of first-order log pi (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_figure(fig, path)


def plot_estimate_vs_truth(path: str | os.PathLike, est, true, masks, names, title: str) -> None:
    """Scatter of estimated vs true f(S, i) over the (S, i) with i in S, one colour per task."""
    plt = _pyplot()
    est, true, masks = np.asarray(est), np.asarray(true), np.asarray(masks, bool)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for i, name in enumerate(names):
        rows = masks[:, i]
        ax.scatter(true[rows, i], est[rows, i], s=12, label=name)
    ax.set_xlabel("true f(S, i): return after fine-tuning on S")
    ax.set_ylabel("estimated f(S, i)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


class ScalarLog:
    """Learning curves and per-stage figures as TensorBoard scalars (tensorboardX, installed with
    brax), written by process 0 under ``logdir``; with ``logdir`` None every method does
    nothing, so callers need no branch.

    ``progress_fn(prefix)`` is a ``progress_fn(env_steps, metrics)`` callback
    (:func:`pgx_jax.train_chunked`) that writes each metric as ``<prefix>/<name>`` at that step.
    A context manager: ``with ScalarLog(d) as log:`` closes it however the block ends.
    """

    def __init__(self, logdir: str | os.PathLike | None):
        self._writer = None
        if logdir is not None and is_main():
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(os.fspath(logdir))

    def scalars(self, prefix: str, values: dict[str, float], step: int = 0) -> None:
        """Each finite value as ``<prefix>/<name>`` at ``step``."""
        if self._writer is None:
            return
        for name, v in values.items():
            if v is not None and np.isfinite(v):
                self._writer.add_scalar(f"{prefix}/{name}", float(v), step)

    def progress_fn(self, prefix: str):
        """A ``progress_fn(env_steps, metrics)`` writing under ``prefix``, or None when not logging."""
        if self._writer is None:
            return None
        return lambda step, metrics: self.scalars(prefix, metrics, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> ScalarLog:
        return self

    def __exit__(self, *exc) -> None:  # closed (its events flushed) however the block ends
        self.close()
