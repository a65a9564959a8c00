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
    assert "group policy" in text and "theta*" in text and text.count("\n") > 12
    assert (tmp_path / "affinity.png").stat().st_size > 1000
