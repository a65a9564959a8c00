import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_executes(tmp_path):
    import nbformat  # the dev extra; CI installs it, so a missing one fails rather than skips
    from nbclient import NotebookClient

    path = os.path.join(ROOT, "notebooks", "quickstart.ipynb")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "groups:" in text and "NMI vs planted regions" in text
    assert (tmp_path / "affinity.png").stat().st_size > 1000
