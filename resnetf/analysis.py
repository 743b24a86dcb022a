"""After training: where the model goes wrong. A grid of the misclassified images the model was
surest of, the confusion matrix with per-class accuracy, and Grad-CAM overlays, saved as PNG/CSV
in the run folder and logged to W&B through the Tracker. A run analyses its test split; a
tuning trial, which never looks at the test split, its validation split. Every figure says which
split it shows.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .models import logits
from .plots import subplots

GRID = 5  # the misclassified grid is GRID x GRID images


@torch.no_grad()
def predict(model, loader, prep, autocast, tta: str = "none", probs=None, weights="airbench"):
    """(class probabilities N x classes, labels, uint8 HWC images) for every image of the
    loader, on the host. `probs` given (the run's final evaluation already made them): the net
    is not run again."""
    model.eval()
    predicted, labels, images = [], [], []
    for x, y in loader:
        if probs is None:
            inputs = prep(x.to(prep.device, non_blocking=True))
            with autocast:
                out = logits(model, inputs, tta, weights=weights)
                predicted.append(out.float().softmax(1).cpu())
        labels.append(y.cpu())
        images.append(x.permute(0, 2, 3, 1).cpu())
    probs = torch.cat(predicted).numpy() if probs is None else probs
    return probs, torch.cat(labels).numpy(), torch.cat(images).numpy()


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n: int = 10) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    return np.bincount(labels * n + preds, minlength=n * n).reshape(n, n)


def most_confident_errors(labels: np.ndarray, probs: np.ndarray, count: int) -> np.ndarray:
    """Indices of the misclassified images, the model's confidence in its wrong answer highest
    first: the errors most worth a look (a label error, a class the net confuses outright)."""
    preds = probs.argmax(1)
    wrong = np.flatnonzero(labels != preds)
    return wrong[np.argsort(-probs[wrong, preds[wrong]], kind="stable")][:count]


def confusion_title(cm: np.ndarray, split: str) -> str:
    accuracy = cm.trace() / max(cm.sum(), 1)
    return f"confusion matrix, {split} split ({cm.sum():,} images): accuracy {accuracy:.2%}"


def plot_confusion(cm: np.ndarray, classes, path: Path, split: str = "test") -> Path:
    fig, ax = subplots(1, 1, figsize=(8.5, 8))
    ax.imshow(cm, cmap="Blues")
    for i in range(len(cm)):
        for j in range(len(cm)):
            ax.text(
                j,
                i,
                cm[i, j],
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), [f"{c} ({a:.0%})" for c, a in zip(classes, per_class)])
    ax.set(xlabel="predicted", ylabel="true (per-class accuracy)", title=confusion_title(cm, split))
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_misclassified(images, labels, probs, classes, path: Path, split: str = "test") -> Path:
    """The GRID x GRID misclassified images the model was surest of, each titled
    true -> predicted (the probability it gave its wrong answer)."""
    wrong = most_confident_errors(labels, probs, GRID * GRID)
    rows = max(1, -(-len(wrong) // GRID))
    fig, axes = subplots(rows, GRID, figsize=(2 * GRID, 2.15 * rows + 0.5), squeeze=False)
    preds = probs.argmax(1)
    for ax, k in zip(axes.flat, list(wrong) + [None] * (rows * GRID - len(wrong))):
        ax.axis("off")
        if k is not None:
            ax.imshow(images[k])
            ax.set_title(
                f"{classes[labels[k]]} -> {classes[preds[k]]}\n({probs[k, preds[k]]:.0%})",
                fontsize=9,
            )
    fig.suptitle(
        f"the {len(wrong)} misclassified {split} images the model was surest of "
        f"(true -> predicted, its probability)"
    )
    fig.tight_layout()
    fig.savefig(path)
    return path


def gradcam_maps(model, inputs: torch.Tensor, targets, layer) -> np.ndarray:
    """Grad-CAM heat maps (N, H, W) in [0, 1] for the given target classes (pytorch-grad-cam)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[layer]) as cam:
        return cam(input_tensor=inputs, targets=[ClassifierOutputTarget(int(t)) for t in targets])


def plot_gradcam(
    model, images, labels, probs, classes, prep, path: Path, count: int, split: str = "test"
) -> Path:
    """For the `count` misclassified images the model was surest of: the image, then Grad-CAM
    for the predicted class and for the true class, side by side, with their probabilities."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    wrong = most_confident_errors(labels, probs, count)
    rows = max(1, len(wrong))
    fig, axes = subplots(rows, 3, figsize=(7.5, 2.6 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    preds = probs.argmax(1)
    if len(wrong):
        x = torch.from_numpy(images[wrong]).permute(0, 3, 1, 2)
        inputs = prep(x.to(prep.device)).float().contiguous()
        model = copy.deepcopy(model).float().eval()  # the run's own net stays in its precision
        for col, targets in ((1, preds[wrong]), (2, labels[wrong])):
            maps = gradcam_maps(model, inputs, targets, model.cam_layer)
            for row, k in enumerate(wrong):
                overlay = show_cam_on_image(images[k] / 255.0, maps[row], use_rgb=True)
                axes[row, col].imshow(overlay)
                what = "predicted" if col == 1 else "true"
                axes[row, col].set_title(
                    f"{what}: {classes[targets[row]]} ({probs[k, targets[row]]:.0%})", fontsize=9
                )
        for row, k in enumerate(wrong):
            axes[row, 0].imshow(images[k])
            axes[row, 0].set_title(f"image (true: {classes[labels[k]]})", fontsize=9)
    else:
        axes[0, 0].set_title("no misclassified image", fontsize=9)
    fig.suptitle(f"Grad-CAM on misclassified {split} images (most confident first)")
    fig.tight_layout()
    fig.savefig(path)
    return path


def analyze(
    model,
    loader,
    prep,
    autocast,
    cfg,
    classes,
    run_dir: Path,
    tracker,
    split: str = "test",
    probs=None,
) -> dict:
    """The analysis files of `split` (`probs`: the final evaluation's, when the run has them)."""
    probs, labels, images = predict(model, loader, prep, autocast, cfg.tta, probs, cfg.tta_weights)
    preds = probs.argmax(1)
    cm = confusion_matrix(labels, preds, len(classes))
    per_class = pd.DataFrame(
        {
            "class": classes,
            "images": cm.sum(1),
            "correct": cm.diagonal(),
            "accuracy": cm.diagonal() / np.maximum(cm.sum(1), 1),
        }
    )
    per_class.to_csv(run_dir / "per_class.csv", index=False)
    pd.DataFrame(cm, index=classes, columns=classes).to_csv(run_dir / "confusion.csv")
    pngs = {
        "confusion_matrix": plot_confusion(cm, classes, run_dir / "confusion.png", split),
        "misclassified": plot_misclassified(
            images, labels, probs, classes, run_dir / "misclassified.png", split
        ),
    }
    if cfg.gradcam_images > 0 and model.cam_layer is None:
        print("no Grad-CAM: the net names no layer for it (models.Net.cam_layer)")
    elif cfg.gradcam_images > 0:
        pngs["gradcam"] = plot_gradcam(
            model,
            images,
            labels,
            probs,
            classes,
            prep,
            run_dir / "gradcam.png",
            cfg.gradcam_images,
            split,
        )
    for key, png in pngs.items():
        tracker.log_image(key, png)
    tracker.log_confusion(labels, preds, classes)
    tracker.log_table("per_class_accuracy", per_class)
    return {"accuracy": float(cm.trace() / cm.sum()), "confusion_matrix": cm}
