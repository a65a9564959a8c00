"""Every Python block of the README and of docs/ runs, at the smoke budget, as a user would paste
it: the blocks of one file in order, in one namespace, in a fresh working directory. The README's
blocks read what ``pgx-jax run`` left there (its group policies), so the test makes that run
first, as the README's own first command does (at the smoke budget)."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def python_blocks(path: pathlib.Path) -> list[str]:
    """The ```python blocks of a Markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def test_the_documents_hold_python_examples():
    assert python_blocks(ROOT / "README.md"), "the README shows no Python"
    assert sum(len(python_blocks(ROOT / f)) for f in FILES) >= 6


def test_no_block_asks_for_a_budget_the_suite_cannot_afford():
    for f in FILES:
        for block in python_blocks(ROOT / f):
            assert not re.search(r"""["'](demo|full)["']""", block), f"{f}: a block runs at demo or full:\n{block}"


@pytest.mark.slow
@pytest.mark.parametrize("name", [f for f in FILES if python_blocks(ROOT / f)])
def test_every_python_block_runs(name, tmp_path, monkeypatch, capsys):
    blocks = python_blocks(ROOT / name)
    monkeypatch.chdir(tmp_path)
    if name == "README.md":
        from pgx_jax.cli import main

        assert main(["run", "--budget", "smoke", "--no-progress"]) == 0
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{name}, Python block {i + 1}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{name}, Python block {i + 1} failed: {type(e).__name__}: {e}\n{block}") from e
    if name == "README.md":  # the re-evaluation reproduces the run's returns, and the episode ran
        returns, saved = (
            namespace["returns"],
            [namespace["index"]["per_task_return"][t] for t in namespace["g"]["tasks"]],
        )
        assert returns == pytest.approx(saved, rel=1e-4, abs=1e-3)
        assert 1 <= namespace["total"] <= namespace["family"].episode_length
