"""The networks: ResnetF as the course project published it, a corrected ResNet-9, and a
whitened conv net for speed.

ResnetF and ResNet9 share the DAWNBench ResNet-9 plan: prep -> layer1 (+residual) -> layer2 ->
layer3 (+residual) -> global max pool -> linear, at 64-128-256-512 channels times `width`.
WhitenedConvNet is the airbench94 plan (Keller Jordan, arXiv 2404.00498): a frozen 2x2 whitening
stem, three conv groups at 64-256-256, about a third of ResNet-9's FLOPs per image.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Net(nn.Module):
    """What a run asks of a net beyond forward(), with defaults that fit an ordinary net: the run
    (train.py, analysis.py) asks through these alone, so a net declares its quirks here, on
    itself, and a new net needs no change to the run."""

    init_images: int = 0
    """Training images `init_from_data` wants before training (0: it wants none)."""

    def init_from_data(self, images: torch.Tensor) -> None:
        """Set weights from `init_images` training images (N, 3, H, W, as the net sees them)."""

    def set_epoch(self, epoch: int) -> None:
        """Called before each training epoch: switch parameters that train in some epochs only."""

    def frozen_parameters(self) -> list[nn.Parameter]:
        """What never trains (the optimizer leaves it out): by default what needs no gradient."""
        return [p for p in self.parameters() if not p.requires_grad]

    def early_parameters(self) -> tuple[list[nn.Parameter], int]:
        """(parameters, epochs): what trains during the first `epochs` epochs only (a linear
        decay schedule takes their lr to 0 over those epochs); by default nothing."""
        return [], 0

    @property
    def cam_layer(self) -> nn.Module | None:
        """Where Grad-CAM looks: by default the last convolution; None: no Grad-CAM."""
        convs = [m for m in self.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1] if convs else None


def _ch(c: int, width: float) -> int:
    return max(1, round(c * width))


def _conv_relu_bn(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    # ResnetF's published order: conv (with bias) -> [maxpool] -> ReLU -> BatchNorm
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1),
        *([nn.MaxPool2d(2, 2)] if pool else []),
        nn.ReLU(),
        nn.BatchNorm2d(cout),
    )


def _conv_bn_relu(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    # ResNet9's order: BatchNorm right after the conv (so the conv needs no bias), pooling
    # before normalising
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
        *([nn.MaxPool2d(2)] if pool else []),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Backbone(Net):
    """prep -> layer1 (+residual1) -> layer2 -> layer3 + dropout (+residual2), from `block`."""

    def __init__(self, block, width: float, dropout: float):
        super().__init__()
        c1, c2, c3, c4 = (_ch(c, width) for c in (64, 128, 256, 512))
        self.prep = block(3, c1)
        self.layer1 = block(c1, c2, pool=True)
        self.residual1 = nn.Sequential(block(c2, c2), block(c2, c2))
        self.layer2 = block(c2, c3, pool=True)
        self.layer3 = nn.Sequential(block(c3, c4, pool=True), nn.Dropout(dropout))
        self.residual2 = nn.Sequential(block(c4, c4), block(c4, c4))
        self.channels = c4

    @property
    def cam_layer(self) -> nn.Module:
        """Where Grad-CAM looks: the last block before pooling, 4x4 maps of the top features."""
        return self.residual2

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.prep(x))
        x = x + self.residual1(x)
        x = self.layer3(self.layer2(x))
        return x + self.residual2(x)


class ResnetF(_Backbone):
    """The course project's net: 6,575,370 parameters at width 1. `softmax=True` reproduces the
    published head, whose probabilities the course project fed to CrossEntropyLoss; the default
    returns logits."""

    def __init__(
        self, num_classes: int = 10, width: float = 1.0, dropout: float = 0.1, softmax: bool = False
    ):
        super().__init__(_conv_relu_bn, width, dropout)
        self.pool = nn.MaxPool2d(4, 2)
        self.fc = nn.Linear(self.channels, num_classes)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(self.pool(self.features(x)).flatten(1))
        return x.softmax(dim=1) if self.softmax else x


class ResNet9(_Backbone):
    """Page's DAWNBench ResNet-9: conv-BN-ReLU, bias-free convs, logits scaled by 1/8 so that
    the softmax starts soft and the large LR of the One Cycle peak stays stable."""

    def __init__(
        self,
        num_classes: int = 10,
        width: float = 1.0,
        dropout: float = 0.0,
        logit_scale: float = 0.125,
    ):
        super().__init__(_conv_bn_relu, width, dropout)
        self.fc = nn.Linear(self.channels, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.amax(self.features(x), dim=(2, 3))) * self.logit_scale


# --- the whitened conv net ----------------------------------------------------------------------


class _BatchNorm(nn.BatchNorm2d):
    """BatchNorm whose scale is fixed at 1 (only the bias trains), running statistics that follow
    the last batches closely (momentum 0.4) and eps 1e-12: the settings of airbench94."""

    def __init__(self, channels: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class _Conv(nn.Conv2d):
    """3x3, padding 1, no bias; identity-initialised on its first in-channels (dirac), so that a
    fresh group starts by passing its input through."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, padding=1, bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight[: min(cin, cout)])


ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU}


def _group(cin: int, cout: int, activation: str = "gelu") -> nn.Sequential:
    return nn.Sequential(
        _Conv(cin, cout),
        nn.MaxPool2d(2),
        _BatchNorm(cout),
        ACTIVATIONS[activation](),
        _Conv(cout, cout),
        _BatchNorm(cout),
        ACTIVATIONS[activation](),
    )


class WhitenedConvNet(Net):
    """2x2 whitening stem (24 channels, weights frozen, set by `init_from_data`) -> GELU ->
    three groups of conv -> maxpool -> BN -> act -> conv -> BN -> act (64-256-256 channels
    times `width`; act GELU, or `activation`) -> max pool 3 -> [dropout] -> linear without bias
    -> logits x logit_scale (airbench94: 1/9)."""

    def __init__(
        self,
        num_classes: int = 10,
        width: float = 1.0,
        dropout: float = 0.0,
        logit_scale: float = 1 / 9,
        eps: float = 5e-4,
        stem_bias_epochs: int = 3,
        head_init_std: float | None = None,
        stem_bias_init: str = "zero",
        activation: str = "gelu",
        init_images: int = 5000,
    ):
        super().__init__()
        self.stem_bias_epochs = stem_bias_epochs
        self.init_images = init_images  # airbench whitens from the first 5000 training images
        widths = [_ch(c, width) for c in (64, 256, 256)]
        self.stem = nn.Conv2d(3, 24, 2, padding=0, bias=True)
        self.stem.weight.requires_grad_(False)
        if stem_bias_init == "zero":  # airbench94's start: the whitened patches as they are
            nn.init.zeros_(self.stem.bias)
        # else nn.Conv2d's own U(+-1/sqrt(12)), which airbench94_muon keeps
        self.groups = nn.Sequential(
            *[_group(cin, cout, activation) for cin, cout in zip([24] + widths[:-1], widths)]
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(widths[-1], num_classes, bias=False)
        if head_init_std is not None:  # airbench94_muon: unit std, the logits scaled down instead
            with torch.no_grad():
                self.fc.weight.mul_(head_init_std / self.fc.weight.std())
        self.logit_scale, self.eps = logit_scale, eps

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the stem to whiten 2x2 patches of `images` (N, 3, H, W, as the net sees them), as
        airbench computes it: the patches' uncentred second moment X^T X / N, its eigenvectors
        scaled by 1/sqrt(eigenvalue + eps), largest eigenvalue first, each with both signs (24
        filters for 12-dim patches)."""
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # N, C, H-1, W-1, 2, 2
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
        # the 12 x 12 moment in float32 (millions of patches: a float64 copy cost seconds on a
        # CPU), its eigendecomposition in float64
        moment = (patches.T @ patches / len(patches)).double()
        eigenvalues, eigenvectors = torch.linalg.eigh(moment)
        filters = eigenvectors.T.flip(0) / torch.sqrt(eigenvalues.flip(0) + self.eps)[:, None]
        filters = filters.reshape(12, 3, 2, 2)
        self.stem.weight.copy_(torch.cat([filters, -filters]).to(self.stem.weight))

    def set_epoch(self, epoch: int) -> None:
        # the stem's bias trains for the first few epochs only, then it is frozen like its weights
        # (a fractional count: its schedule takes its lr to 0 within the last of them)
        self.stem.bias.requires_grad_(epoch < self.stem_bias_epochs)

    def frozen_parameters(self) -> list[nn.Parameter]:
        # named, not read from requires_grad: the stem's bias is off only in later epochs
        return [self.stem.weight] + [m.weight for m in self.modules() if isinstance(m, _BatchNorm)]

    def early_parameters(self) -> tuple[list[nn.Parameter], int]:
        return [self.stem.bias], self.stem_bias_epochs

    @property
    def cam_layer(self) -> nn.Module:
        """Where Grad-CAM looks: the last group, 3x3 maps before the final pool."""
        return self.groups[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(nn.functional.gelu(self.stem(x)))
        x = self.dropout(torch.amax(x, dim=(2, 3)))
        return self.fc(x) * self.logit_scale


NETS = {"resnetf": ResnetF, "resnet9": ResNet9, "whitened_convnet": WhitenedConvNet}


def build(cfg) -> nn.Module:
    """The net `cfg.model` names (Config.validate() has checked the name and the head), with
    cfg's BatchNorm momentum where it sets one."""
    if cfg.model == "resnetf":
        net = ResnetF(width=cfg.width, dropout=cfg.dropout, softmax=cfg.softmax_head)
    elif cfg.model == "whitened_convnet":
        net = WhitenedConvNet(
            width=cfg.width,
            dropout=cfg.dropout,
            stem_bias_epochs=cfg.stem_bias_epochs,
            logit_scale=1 / 9 if cfg.logit_scale is None else cfg.logit_scale,
            head_init_std=cfg.head_init_std,
            stem_bias_init=cfg.stem_bias_init,
            activation=cfg.activation or "gelu",
            init_images=cfg.whiten_images,
        )
    else:
        net = NETS[cfg.model](width=cfg.width, dropout=cfg.dropout)
    if cfg.bn_momentum is not None:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = cfg.bn_momentum
    return net


def logits(
    model: nn.Module,
    inputs: torch.Tensor,
    tta: str = "none",
    fraction: float = 1.0,
    weights: str = "airbench",
) -> torch.Tensor:
    """The net's logits under a test-time augmentation level: none; flip (the mean with the
    mirrored images); flip_translate (the image, its mirror, both shifted by one pixel up-left
    and down-right, reflect-padded: 6 views, weighed 1/4, 1/4 and 1/8 each for the four shifted
    as airbench does, or 1/6 each with `weights="uniform"`). With `fraction` < 1: the plain pass
    over every image, then the TTA level only for that fraction of them, those whose top
    probability is lowest (the views change the answer where the net is unsure)."""
    if tta != "none" and fraction < 1:
        plain = model(inputs)
        unsure = least_sure(plain, fraction)
        views = logits(model, inputs[unsure], tta, weights=weights)
        return plain.index_copy(0, unsure, views.to(plain.dtype))
    if tta == "none":
        return model(inputs)
    mirrored = (model(inputs) + model(inputs.flip(3))) / 2
    if tta == "flip":
        return mirrored
    h, w = inputs.shape[-2:]
    padded = nn.functional.pad(inputs, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[:, :, :h, :w], padded[:, :, 2 : h + 2, 2 : w + 2]]
    translated = sum(logits(model, x, "flip") for x in shifted) / 2
    if weights == "uniform":  # six views at 1/6: the plain pair counts 2 of 6, the shifted 4
        return (mirrored + 2 * translated) / 3
    return (mirrored + translated) / 2


def least_sure(plain: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the ceil(fraction x N) rows of `plain` logits with the lowest top probability."""
    k = math.ceil(fraction * len(plain))
    return plain.float().softmax(1).amax(1).topk(k, largest=False).indices


def summary(model: nn.Module, device=None) -> str:
    """torchinfo's layer table for one 32x32 image; the model is left as it was."""
    import torchinfo

    was_training = model.training
    weight = next(model.parameters())  # a half-precision net takes fp16 images
    image = torch.zeros(1, 3, 32, 32, dtype=weight.dtype, device=device or weight.device)
    text = str(
        torchinfo.summary(
            model, input_data=image, verbose=0, col_names=("output_size", "num_params")
        )
    )
    model.train(was_training)
    return text


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
