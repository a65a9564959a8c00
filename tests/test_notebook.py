"""The quickstart notebook: it runs top to bottom, what it prints is consistent with itself, and
the findings its text states hold on the outputs stored in it (its demo-budget run) and, when
the test is run at that budget, on a fresh run."""

import ast
import os
import re

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = os.path.join(ROOT, "notebooks", "quickstart.ipynb")
COLUMNS = ("group policy", "multitask", "theta*")


def _text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def _printed(text: str) -> dict:
    """What the notebook prints: tasks, planted groups, groups, NMI and the return table."""
    tasks = list(ast.literal_eval(re.search(r"^\d+ tasks: (\(.*\))$", text, re.M).group(1)))
    planted = list(ast.literal_eval(re.search(r"^planted groups \(motor polarity\): (\(.*\))$", text, re.M).group(1)))
    groups = ast.literal_eval(re.search(r"^groups: (\[.*\])$", text, re.M).group(1))
    nmi = float(re.search(r"^NMI vs planted motor polarity: ([\d.]+)$", text, re.M).group(1))
    header = re.search(r"^task\s+group policy\s+multitask\s+theta\*$", text, re.M)
    assert header, "no return table"
    lines = text[header.end() :].strip().splitlines()[: len(tasks) + 1]
    rows = [line.split() for line in lines]
    assert [r[0] for r in rows] == [*tasks, "mean"] and all(len(r) == 4 for r in rows), rows
    table = np.array([[float(v) for v in r[1:]] for r in rows])  # [tasks + mean, 3]
    return {"tasks": tasks, "planted": planted, "groups": groups, "nmi": nmi, "table": table}


def _check_consistent(p: dict) -> None:
    """The printed figures agree with each other: the groups (k found by the method) cover every
    task once, the NMI is the NMI of those groups against the planted split, and the mean row is
    the mean of the task rows (each printed to 0.1)."""
    tasks = p["tasks"]
    assert sorted(t for g in p["groups"] for t in g) == sorted(tasks), p["groups"]
    labels = [next(j for j, g in enumerate(p["groups"]) if t in g) for t in tasks]
    assert p["nmi"] == round(normalized_mutual_info_score(p["planted"], labels), 3)
    np.testing.assert_allclose(p["table"][-1], p["table"][:-1].mean(0), atol=0.1 + 1e-9)


def _check_findings(p: dict) -> None:
    """The markdown's finding: "without the task id the multitask policy balances one motor
    polarity and drops the other; the group policies balance both", and the group policies
    beat the multitask baseline "the grouping has to beat". A polarity is balanced where its
    tasks' mean return is at least 100 (half the 200 steps) and dropped where it is at most 20."""
    table, planted = p["table"][:-1], np.array(p["planted"])
    by_polarity = np.stack([table[planted == k].mean(0) for k in (0, 1)])  # [polarity, column]
    group, multitask = by_polarity[:, 0], by_polarity[:, 1]
    assert multitask.max() >= 100 and multitask.min() <= 20, by_polarity
    assert group.min() >= 100, by_polarity
    assert p["table"][-1, 0] > p["table"][-1, 1], p["table"][-1]


def test_the_stored_outputs_hold_the_notebook_s_findings():
    """The outputs saved in the notebook (its demo-budget run, what a reader sees) bear out its
    text."""
    import nbformat

    nb = nbformat.read(PATH, as_version=4)
    text = _text(nb)
    assert "timings (s):" in text  # the outputs are stored
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the heatmap
    p = _printed(text)
    _check_consistent(p)
    _check_findings(p)


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    """The notebook runs top to bottom at the smoke budget (``PGX_JAX_NOTEBOOK_TEST_BUDGET=demo``
    runs it at the budget its text describes, about 3 minutes on 2 idle cores, and checks its
    findings on that run too) and prints consistent figures and the heatmap."""
    import nbformat  # the dev extra; CI installs it, so a missing one fails rather than skips
    from nbclient import NotebookClient

    budget = os.environ.get("PGX_JAX_NOTEBOOK_TEST_BUDGET", "smoke")
    monkeypatch.setenv("PGX_JAX_NOTEBOOK_BUDGET", budget)  # the kernel inherits the environment
    nb = nbformat.read(PATH, as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    p = _printed(_text(nb))
    from pgx_jax import make_family

    family = make_family("pendulum-physics")
    assert p["tasks"] == list(family.task_names) and p["planted"] == list(family.groups)
    _check_consistent(p)
    if budget == "demo":
        _check_findings(p)
    assert (tmp_path / "affinity.png").stat().st_size > 1000
