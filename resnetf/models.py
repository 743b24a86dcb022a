"""The networks: ResnetF as the course project published it, and a corrected ResNet-9.

Both share the DAWNBench ResNet-9 plan: prep -> layer1 (+residual) -> layer2 -> layer3
(+residual) -> global max pool -> linear, at 64-128-256-512 channels times `width`.
"""
from __future__ import annotations

import torch
from torch import nn


def _ch(c: int, width: float) -> int:
    return max(1, round(c * width))


def _conv_relu_bn(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    # ResnetF's published order: conv (with bias) -> [maxpool] -> ReLU -> BatchNorm
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), *([nn.MaxPool2d(2, 2)] if pool else []),
                         nn.ReLU(), nn.BatchNorm2d(cout))


def _conv_bn_relu(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    # ResNet9's order: BatchNorm right after the conv (so the conv needs no bias), pooling
    # before normalising
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                         *([nn.MaxPool2d(2)] if pool else []),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Backbone(nn.Module):
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

    def __init__(self, num_classes: int = 10, width: float = 1.0, dropout: float = 0.1,
                 softmax: bool = False):
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

    def __init__(self, num_classes: int = 10, width: float = 1.0, dropout: float = 0.0,
                 logit_scale: float = 0.125):
        super().__init__(_conv_bn_relu, width, dropout)
        self.fc = nn.Linear(self.channels, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.amax(self.features(x), dim=(2, 3))) * self.logit_scale


def build(cfg) -> nn.Module:
    """The net `cfg.model` names (Config.validate() has checked the name and the head)."""
    if cfg.model == "resnetf":
        return ResnetF(width=cfg.width, dropout=cfg.dropout, softmax=cfg.softmax_head)
    return ResNet9(width=cfg.width, dropout=cfg.dropout)


def logits(model: nn.Module, inputs: torch.Tensor, tta_flip: bool = False) -> torch.Tensor:
    """The net's logits, averaged with those of the mirrored images when tta_flip is on."""
    out = model(inputs)
    return (out + model(inputs.flip(3))) / 2 if tta_flip else out


def summary(model: nn.Module, device=None) -> str:
    """torchinfo's layer table for one 32x32 image; the model is left as it was."""
    import torchinfo

    was_training = model.training
    text = str(torchinfo.summary(model, input_size=(1, 3, 32, 32), device=device, verbose=0,
                                 col_names=("output_size", "num_params")))
    model.train(was_training)
    return text


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
