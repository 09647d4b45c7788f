"""The notebooks in examples/ run top to bottom in a fresh Jupyter kernel, and every figure shows as an image.

A fresh kernel is the case that once failed: cnnlab's figures are made without pyplot, and IPython shows a bare
matplotlib Figure as the text `<Figure size 1000x380 with 2 Axes>` until pyplot has been imported. Each notebook runs
in a folder of its own (its runs/ and files go there); a cell tagged "figure" must have shown a PNG.
"""

import json
from pathlib import Path

import pytest

from conftest import REPO, missing

NOTEBOOKS = sorted((REPO / "examples").glob("*.ipynb"))
# Whether matplotlib's inline backend has taught IPython to draw Figures (it does once a pyplot figure is made):
# if it had, a cnnlab figure would show even without its own PNG.
INLINE_PROBE = """
from matplotlib.figure import Figure
try:
    get_ipython().display_formatter.formatters["image/png"].lookup_by_type(Figure)
    print("inline backend draws Figures")
except KeyError:
    print("Figures draw themselves")
"""


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_there_are_the_three_notebooks():
    assert [path.name for path in NOTEBOOKS] == ["01_seed_assignment.ipynb", "02_your_own_keras_model.ipynb",
                                                 "03_your_own_folder_of_images.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_stored_without_outputs(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            assert cell["outputs"] == [] and cell["execution_count"] is None, source[:200]
            assert "%matplotlib" not in source and "pyplot" not in source, "the figures must show without it"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_runs_in_a_fresh_kernel_with_its_figures_inline(path, tmp_path):
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError:
        missing("nbclient and nbformat are not installed (pip install -e '.[dev]')")
    notebook = nbformat.read(path, as_version=4)
    figure_cells = [cell for cell in code_cells(notebook) if "figure" in cell.metadata.get("tags", [])]
    assert figure_cells, f"{path.name} has no cell tagged figure"
    notebook.cells.append(nbformat.v4.new_code_cell(INLINE_PROBE))
    # a CellExecutionError (with the cell and its traceback) when any cell fails
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    for cell in figure_cells:
        kinds = [kind for output in cell.outputs for kind in output.get("data", {})]
        assert "image/png" in kinds, f"no image from:\n{cell.source}\noutputs: {cell.outputs}"
    for cell in code_cells(notebook):
        for output in cell.outputs:
            text = output.get("data", {}).get("text/plain", "")
            assert not (text.startswith("<Figure size") and "image/png" not in output["data"]), cell.source
    assert notebook.cells[-1].outputs[0]["text"].strip() == "Figures draw themselves"
