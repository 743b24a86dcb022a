"""The Colab notebook runs top to bottom with tiny settings, and is committed without outputs."""

import nbformat
import pytest

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "resnetf_colab.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert any("parameters" in c.metadata.get("tags", []) for c in code)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tiny_data, tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(out),
        cwd=str(REPO / "notebooks"),
        kernel_name="python3",
        progress_bar=False,
        parameters={
            "DATA_DIR": str(tiny_data),
            "RUNS_DIR": str(tmp_path / "runs"),
            "WANDB_MODE": "offline",
            "EPOCHS": 2,
            "WIDTH": 0.0625,
            "BATCH_SIZE": 10,
            "WORKERS": 0,
            "LR_RANGE_STEPS": 30,
            "TUNE_TRIALS": 3,
            "TUNE_EPOCHS": 3,
            "VAL_SIZE": 20,
            "GRADCAM_IMAGES": 2,
        },
    )
    nb = nbformat.read(out, as_version=4)
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    # range test, curves, misclassified, confusion, Grad-CAM, predict, the study's two plots
    assert len(images) >= 8
    for cell in nb.cells:  # every cell that plots leaves a PNG, which GitHub and nbconvert show
        kinds = {k for o in cell.get("outputs", []) for k in o.get("data", {})}
        if "application/vnd.plotly.v1+json" in kinds or "display(Image" in cell.source:
            assert "image/png" in kinds, cell.source[:80]
    text = "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream"
    )
    assert "IProgress not found" not in text and "\r" not in text  # one line per epoch
    assert "epoch   1  lr" in text
    plotly = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "application/vnd.plotly.v1+json" in o.get("data", {})
    ]
    titles = [
        o["data"]["application/vnd.plotly.v1+json"]["layout"]["title"]["text"] for o in plotly
    ]
    assert any("Importance" in t for t in titles) and any("Parallel" in t for t in titles)
    runs = list((tmp_path / "runs").glob("oc_24ep_s0_*/metrics.csv"))
    assert len(runs) == 1
    assert (tmp_path / "runs" / "tune" / "colab_trials.csv").exists()
