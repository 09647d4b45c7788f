"""The notebooks in examples/ run top to bottom in a fresh Jupyter kernel, and every figure shows as an image.

A fresh kernel is the case that once failed: cnnlab's figures are made without pyplot, and IPython shows a bare
matplotlib Figure as the text `<Figure size 1000x380 with 2 Axes>` until a pyplot figure or `%matplotlib inline` has
loaded matplotlib's inline backend. Each notebook runs in a folder of its own (its runs/ and files go there); a cell
tagged "figure" must have shown a PNG, one tagged "progress" Keras's progress bar.
"""

import gc
import json
import weakref

import pytest
from matplotlib._pylab_helpers import Gcf

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
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    for cell in figure_cells:
        kinds = [kind for output in cell.outputs for kind in output.get("data", {})]
        assert "image/png" in kinds, f"no image from:\n{cell.source}\noutputs: {cell.outputs}"
    for cell in code_cells(notebook):
        if "progress" in cell.metadata.get("tags", []):  # Keras's progress bar (verbose=1), not a line per epoch
            assert "━" in "".join(output.get("text", "") for output in cell.outputs), cell.source
        for output in cell.outputs:
            text = output.get("data", {}).get("text/plain", "")
            assert not (text.startswith("<Figure size") and "image/png" not in output["data"]), cell.source
    assert notebook.cells[-1].outputs[0]["text"].strip() == "Figures draw themselves"


def test_a_figure_draws_itself_as_png_and_a_run_directory_as_html(tmp_path):
    """What a notebook asks the cell's value for (IPython's _repr_png_ and _repr_html_), asked here directly."""
    from cnnlab import RunDir, plots

    figure = plots.learning_curves({"loss": [1.0, 0.5], "val_loss": [1.2, 0.8]})
    png = figure._repr_png_()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    drawn = weakref.ref(figure)  # pyplot holds no reference: a script's figures are freed with their last name
    del figure
    gc.collect()
    assert drawn() is None and not Gcf.get_all_fig_managers()
    run = RunDir(tmp_path / "digits-seed-1")
    assert "no such run directory yet" in run._repr_html_()
    run.path.mkdir()
    run.write_history({"epoch": [1, 2], "loss": [1.0, 0.5]})
    assert "not finished: 2 epoch(s) completed" in run._repr_html_()
    run.metrics.write_text(json.dumps({"dataset": "digits", "recipe": "seed", "best_epoch": 2, "epochs_run": 2,
                                       "val_accuracy": 0.9, "val_loss": 0.3, "test_accuracy": 0.8765, "test_loss": 0.4}))
    shown = run._repr_html_()
    assert "<b>digits-seed-1</b>" in shown and "<td>test</td><td>87.65%</td><td>0.4000</td>" in shown
    assert "report.html" not in shown
    run.report.write_text("<html></html>")
    assert 'href="' in run._repr_html_() and "digits-seed-1/report.html" in run._repr_html_()
