"""A trained model outside any run: `load()` it from a run folder, a model.pt or a W&B
artifact, and ask it about images.

    python -m resnetf.predict SOURCE IMAGE_OR_FOLDER... [--csv FILE] [--topk K] [--tta LEVEL]
                              [--gradcam FILE] [--device cpu]

SOURCE: a run folder, its model.pt, or a W&B artifact (ENTITY/PROJECT/model-RUNID:best, online).
Images: PNG/JPEG files or folders of them; any size (resized to 32x32, said once), in any mode
PIL reads as 8-bit colour or can be brought there (`as_rgb`): grayscale, CMYK and palettes as
PIL converts them, 16-bit grayscale scaled to 8 bits, transparency laid over the training set's
mean colour. The net sees them as its run saw test images: the run's normalisation
and, unless --tta says otherwise, its test-time augmentation. A file that cannot be read is one
line naming it; the others are still predicted and the exit code says that some were skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import checkpoint, models
from .config import Config

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class LoadError(ValueError):
    """The source is no resnetf model, or its config cannot rebuild the net."""


def load(source, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Config]:
    """(the net in eval mode on `device`, its Config) from a run folder, a model.pt written by
    resnetf, or a W&B artifact reference ENTITY/PROJECT/model-ID[:alias] (online only). The
    class names are on the net: `net.classes`."""
    path = _local(source)
    try:
        saved = checkpoint.read_model_file(path)
    except ValueError as e:
        raise LoadError(str(e)) from None
    cfg = saved["config"]  # checked against Config's types by read_model_file
    try:
        net = models.build(cfg)
    except (ValueError, TypeError) as e:
        raise LoadError(f"{path}: its config cannot rebuild the net ({e})") from None
    state = saved["state_dict"]
    # a half-precision run saved fp16 weights: the net takes them in their own precision
    if any(v.dtype == torch.float16 for v in state.values()):
        from .optim import Precision

        Precision(half=True, half_batchnorm=cfg.half_batchnorm).prepare(net)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise LoadError(
            f"{path}: the weights do not fit the net its config builds "
            f"({cfg.model}, width {cfg.width}): {' '.join(first[:2])}"
        ) from None
    net.classes = tuple(saved["classes"])
    return net.to(device).eval(), cfg


def _local(source) -> Path:
    path = Path(source)
    if path.is_dir():
        if not (path / checkpoint.MODEL_NAME).is_file():
            raise LoadError(
                f"{path} has no {checkpoint.MODEL_NAME} (a run with --no_save_model, "
                f"or not a run folder)"
            )
        return path / checkpoint.MODEL_NAME
    if path.is_file():
        return path
    text = str(source)
    if text.count("/") == 2 and "model-" in text:  # ENTITY/PROJECT/model-ID[:alias]
        return _download(text)
    raise LoadError(
        f"{source}: no such run folder or file, and not a W&B artifact reference "
        f"(ENTITY/PROJECT/model-RUNID:alias)"
    )


def _download(reference: str) -> Path:
    from .tracking import default_wandb_mode

    if default_wandb_mode() != "online":
        raise LoadError(
            f"{reference}: fetching a W&B artifact needs W&B online and a login "
            f"(wandb login, or WANDB_API_KEY); offline, load the run folder instead"
        )
    try:
        import wandb

        artifact = wandb.Api().artifact(
            reference if ":" in reference else reference + ":latest", type="model"
        )
        return Path(artifact.download()) / checkpoint.MODEL_NAME
    except Exception as e:
        raise LoadError(
            f"{reference}: could not fetch the artifact ({type(e).__name__}: {e})"
        ) from None


# --- images in, classes out -----------------------------------------------------------------------


def image_paths(items) -> list[Path]:
    paths = []
    for item in map(Path, items):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths.append(item)
    return paths


def read_images(paths) -> tuple[np.ndarray, list[Path], list[str]]:
    """(uint8 N x 32 x 32 x 3, the paths read, one line per file that could not be)."""
    from PIL import Image

    images, read, problems, resized = [], [], [], 0
    for path in paths:
        try:
            with Image.open(path) as image:
                image = as_rgb(image)
                if image.size != (32, 32):
                    resized += 1
                    image = image.resize((32, 32), Image.Resampling.BILINEAR)
                images.append(np.asarray(image, dtype=np.uint8))
            read.append(path)
        except Exception as e:
            problems.append(f"skipped {path}: {type(e).__name__}: {e}")
    if resized:
        print(
            f"{resized} of {len(read)} images were not 32x32: resized to 32x32 (bilinear), as "
            f"CIFAR-10's images are",
            file=sys.stderr,
        )
    return np.stack(images) if images else np.zeros((0, 32, 32, 3), np.uint8), read, problems


SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def as_rgb(image):
    """An opened PIL image as 8-bit RGB in the colours it shows. PIL's own `convert("RGB")`
    clips 16-bit grayscale (a 16-bit PNG's 78 x 257 reads as white) and keeps whatever colour a
    transparent pixel hides: 16-bit values are scaled to 8 bits (v / 257), and an image with
    transparency (RGBA, LA, a palette's transparent index) is composited over the CIFAR-10 mean
    colour, which the net's normalisation maps to 0 (no evidence either way). Modes whose values
    have no fixed range (32-bit integer, float) are refused with a ValueError."""
    from PIL import Image

    from .data import CIFAR10_MEAN

    if image.mode in SIXTEEN_BIT or (image.mode == "I" and image.format == "PNG"):
        values = np.asarray(image).astype(np.float64)  # PNG's 16-bit grayscale: 0..65535
        return Image.fromarray(np.round(values / 257).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("I", "F"):
        kind = "32-bit integer" if image.mode == "I" else "floating-point"
        raise ValueError(f"{kind} pixels (mode {image.mode}) have no range to map to 0..255")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        mean = tuple(round(255 * m) for m in CIFAR10_MEAN)
        background = Image.new("RGBA", image.size, (*mean, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


@torch.no_grad()
def probabilities(
    net, cfg: Config, images: np.ndarray, tta: str | None = None, batch_size: int = 500
) -> torch.Tensor:
    """Class probabilities (N x classes) for uint8 HWC images, normalised as the run normalised
    its test images, under `tta` (default: the run's level)."""
    from .batch_augment import BatchAugment

    device = next(net.parameters()).device
    half = any(p.dtype == torch.float16 for p in net.parameters())  # a half-precision run's net
    dtype = torch.float16 if half else torch.float32
    prep = BatchAugment(cfg, device, train=False, dtype=dtype)
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i : i + batch_size]).to(device).permute(0, 3, 1, 2)
        level, fraction = (tta, 1.0) if tta else (cfg.tta, cfg.tta_fraction)  # the run's own
        out.append(
            models.logits(net, prep(x), level, fraction, cfg.tta_weights).float().softmax(1).cpu()
        )
    return torch.cat(out) if out else torch.zeros(0, len(net.classes))


def table(paths, probs: torch.Tensor, classes, topk: int) -> pd.DataFrame:
    top = probs.topk(min(topk, probs.shape[1]), dim=1)
    rows = []
    for path, p, k in zip(paths, top.values.tolist(), top.indices.tolist()):
        row = {"path": str(path), "class": classes[k[0]], "probability": p[0]}
        for rank in range(1, len(k)):
            row[f"class_{rank + 1}"], row[f"probability_{rank + 1}"] = classes[k[rank]], p[rank]
        rows.append(row)
    return pd.DataFrame(rows)


def plot_gradcam(
    net, cfg: Config, images: np.ndarray, probs: torch.Tensor, paths, out: Path
) -> Path:
    """Each image beside the Grad-CAM map of its predicted class, one row an image."""
    import copy

    from pytorch_grad_cam.utils.image import show_cam_on_image

    from .analysis import gradcam_maps
    from .batch_augment import BatchAugment
    from .plots import subplots

    layer_net = copy.deepcopy(net).float().eval()
    if layer_net.cam_layer is None:
        raise LoadError("the net names no Grad-CAM layer (models.Net.cam_layer)")
    prep = BatchAugment(cfg, torch.device("cpu"), train=False)
    inputs = prep(torch.from_numpy(images).permute(0, 3, 1, 2)).float()
    predicted = probs.argmax(1).tolist()
    maps = gradcam_maps(layer_net.cpu(), inputs, predicted, layer_net.cam_layer)
    fig, axes = subplots(len(images), 2, figsize=(4, 2.2 * len(images)), squeeze=False)
    for row, (image, cam, k) in enumerate(zip(images, maps, predicted)):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(Path(paths[row]).name, fontsize=8)
        axes[row, 1].imshow(show_cam_on_image(image / 255.0, cam, use_rgb=True))
        axes[row, 1].set_title(f"{net.classes[k]} ({probs[row, k]:.0%})", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("source", help="run folder, model.pt, or ENTITY/PROJECT/model-RUNID:alias")
    ap.add_argument("images", nargs="+", help="PNG/JPEG files or folders of them")
    ap.add_argument("--csv", default=None, help="write one row per image here")
    ap.add_argument("--topk", type=int, default=3, help="classes per image, most likely first")
    ap.add_argument(
        "--tta",
        choices=["none", "flip", "flip_translate"],
        default=None,
        help="test-time augmentation (default: the run's)",
    )
    ap.add_argument("--gradcam", default=None, help="PNG of each image's Grad-CAM map")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return ap


def check_outputs(args, classes: int) -> None:
    """A LoadError for --topk outside 1..classes, or an output file that cannot be written:
    said before any prediction is computed."""
    if not 1 <= args.topk <= classes:
        raise LoadError(f"--topk: must be in 1..{classes}, the model's classes (got {args.topk})")
    for flag, path in (("--csv", args.csv), ("--gradcam", args.gradcam)):
        if path is None:
            continue
        folder = Path(path).absolute().parent
        if not folder.is_dir():
            raise LoadError(f"{flag}: cannot write {path}: no folder {folder}")
        if not os.access(folder, os.W_OK):
            raise LoadError(f"{flag}: cannot write {path}: {folder} is not writable")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        net, cfg = load(args.source, args.device)
        check_outputs(args, len(net.classes))
    except LoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    images, paths, problems = read_images(image_paths(args.images))
    for line in problems:
        print(line, file=sys.stderr)
    probs = probabilities(net, cfg, images, args.tta)
    result = table(paths, probs, net.classes, args.topk)
    with pd.option_context("display.max_rows", 50, "display.width", 120):
        print(
            result.to_string(index=False, float_format="%.3f") if len(result) else "no image read"
        )
    if args.csv:
        result.to_csv(args.csv, index=False)
    if args.gradcam and len(images):
        print(f"Grad-CAM: {plot_gradcam(net, cfg, images, probs, paths, Path(args.gradcam))}")
    return 1 if problems or not len(paths) else 0


if __name__ == "__main__":
    raise SystemExit(main())
