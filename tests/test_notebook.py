import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    """The notebook runs top to bottom (at the smoke budget: its demo-budget outputs are stored
    in the notebook) and prints the groups, the NMI with the planted split and each task's return
    under its group's policy beside theta*'s."""
    import nbformat  # the dev extra; CI installs it, so a missing one fails rather than skips
    from nbclient import NotebookClient

    path = os.path.join(ROOT, "notebooks", "quickstart.ipynb")
    monkeypatch.setenv("PGX_JAX_NOTEBOOK_BUDGET", "smoke")  # the kernel inherits the environment
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "groups:" in text and "NMI vs planted motor polarity" in text
    from pgx_jax import make_family

    names = ["mean", *make_family("pendulum-physics").task_names]
    rows = [line.split() for line in text.splitlines() if line.split()[:1] and line.split()[0] in names]
    assert len(rows) == 11 and all(len(r) == 4 for r in rows)  # ten tasks and the mean: group, multitask, theta*
    assert all(0 <= float(v) <= 200 for r in rows for v in r[1:])  # +1 per balanced step, 200 steps
    assert (tmp_path / "affinity.png").stat().st_size > 1000
