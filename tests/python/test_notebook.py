"""examples/quickstart.ipynb runs top to bottom (nbclient) and shows learning."""
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("TESSERA_REPO", str(tmp_path))  # a fresh random model, not a demo run
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the kernel's tempfile puts that model
    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "examples")}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "zero-shot accuracy on 200 test images" in text
    first, last = [float(x) for x in text.split("first loss ")[1].split(", last loss ")]
    assert last < first
    assert any(o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", []))
