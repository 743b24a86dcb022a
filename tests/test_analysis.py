"""After-training analysis, run comparison, --seeds, and the model summary."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import read_wandb_history, run_dir_of
from resnetf import run
from resnetf.analysis import confusion_matrix


@pytest.mark.slow
def test_analysis_files_exist_with_expected_sizes_and_agree_with_the_accuracy(tiny_cfg):
    summary = run(tiny_cfg.replace(wandb_mode="offline", gradcam_images=3))
    d = run_dir_of(summary)
    sizes = {}
    for name in ("misclassified.png", "confusion.png", "gradcam.png"):
        with Image.open(d / name) as image:
            sizes[name] = image.size
    # Grad-CAM is sized to its rows: 3 images, 3 columns (image, predicted, true)
    assert sizes["gradcam.png"][1] > sizes["gradcam.png"][0] > 600
    cm = pd.read_csv(d / "confusion.csv", index_col=0).to_numpy()
    assert cm.shape == (10, 10) and cm.sum() == 50  # every test image, once
    assert np.trace(cm) / cm.sum() == summary["final_test_acc"]
    per_class = pd.read_csv(d / "per_class.csv")
    assert per_class["images"].tolist() == cm.sum(1).tolist()
    np.testing.assert_allclose(per_class["accuracy"], np.diag(cm) / cm.sum(1))
    logged = {key.split("/")[0] for row in read_wandb_history(d) for key in row}
    assert {
        "misclassified",
        "confusion_matrix",
        "gradcam",
        "confusion_table",
        "per_class_accuracy",
    } <= logged
    summary_txt = (d / "model_summary.txt").read_text()
    assert "Total params" in summary_txt and f"{summary['parameters']:,}" in summary_txt


@pytest.mark.slow
def test_the_analysis_reuses_the_final_evaluation_instead_of_a_second_tta_pass(
    tiny_cfg, monkeypatch
):
    from resnetf import analysis

    def second_pass(*args, **kwargs):
        raise AssertionError("the analysis ran the net over the test split again")

    monkeypatch.setattr(analysis, "logits", second_pass)
    summary = run(tiny_cfg.replace(tta="flip", gradcam_images=1))
    d = run_dir_of(summary)
    assert "analysis_error" not in summary
    cm = pd.read_csv(d / "confusion.csv", index_col=0).to_numpy()
    assert cm.sum() == 50 and np.trace(cm) / cm.sum() == summary["final_test_acc"]


def test_the_misclassified_images_come_most_confident_first():
    from resnetf.analysis import most_confident_errors

    labels = np.array([0, 1, 2, 3, 4])
    probs = np.full((5, 5), 0.05)
    probs[[0, 1, 2, 3, 4], [1, 1, 0, 0, 0]] = [0.6, 0.9, 0.8, 0.3, 0.95]  # image 1 is right
    assert most_confident_errors(labels, probs, 10).tolist() == [4, 2, 0, 3]
    assert most_confident_errors(labels, probs, 2).tolist() == [4, 2]


@pytest.mark.slow
def test_figures_say_which_split_they_show_and_grad_cam_grows_with_its_images(tiny_cfg):
    from resnetf.analysis import confusion_title

    cm = np.array([[3, 1], [0, 4]])
    assert confusion_title(cm, "val") == "confusion matrix, val split (8 images): accuracy 87.50%"
    heights = {}
    for count in (1, 4):
        d = run_dir_of(run(tiny_cfg.replace(gradcam_images=count)))
        with Image.open(d / "gradcam.png") as image:
            heights[count] = image.size[1]
    assert heights[4] > 3 * heights[1] * 0.8


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


@pytest.mark.slow
def test_analysis_can_be_switched_off(tiny_cfg):
    d = run_dir_of(run(tiny_cfg.replace(analysis=False)))
    assert not (d / "confusion.png").exists() and (d / "metrics.csv").exists()


def test_gradcam_maps_show_where_the_class_evidence_is():
    import torch

    from resnetf.analysis import gradcam_maps
    from resnetf.models import ResNet9

    torch.manual_seed(0)
    net = ResNet9(width=0.25).eval()
    # an image with a bright square in one corner: the maps must not be blank or uniform
    x = torch.zeros(2, 3, 32, 32)
    x[:, :, :12, :12] = 3.0
    maps = gradcam_maps(net, x, [0, 1], net.cam_layer)
    assert maps.shape == (2, 32, 32)
    assert 0 <= maps.min() and maps.max() <= 1
    assert all(m.max() - m.min() > 0.5 for m in maps), "a blank or flat map"
    other = gradcam_maps(net, x[:1], [5], net.cam_layer)
    assert not np.allclose(other[0], maps[0])  # another class, another map
