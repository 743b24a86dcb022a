import pytest
import torch

from resnetf import models
from resnetf.config import Config


def test_resnetf_has_the_published_parameter_count_and_shape():
    model = models.ResnetF()
    assert models.count_parameters(model) == 6_575_370
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnetf_softmax_head_is_optional():
    x = torch.randn(4, 3, 32, 32)
    probs = models.ResnetF(width=0.125, softmax=True).eval()(x)
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    logits = models.ResnetF(width=0.125).eval()(x)
    assert (logits < 0).any()  # raw logits, not probabilities


def test_build_follows_the_config():
    net = models.build(Config(model="resnetf", dropout=0.25, width=0.25))
    assert isinstance(net, models.ResnetF)
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.25]
    assert net.fc.in_features == 128
    net9 = models.build(Config(model="resnet9", width=0.125))
    assert isinstance(net9, models.ResNet9) and net9(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet9_is_bias_free_conv_bn_relu():
    net = models.ResNet9(width=0.125)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and all(c.bias is None for c in convs)
    assert isinstance(net.prep[1], torch.nn.BatchNorm2d) and isinstance(net.prep[2], torch.nn.ReLU)


def test_every_net_the_config_names_is_registered_and_builds():
    import typing

    choices = set(typing.get_args(typing.get_type_hints(Config)["model"]))
    assert choices == set(models.NETS)
    for name in choices:
        net = models.build(Config(model=name, width=0.0625))
        assert isinstance(net, models.NETS[name]) and isinstance(net, models.Net)
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_the_whitened_net_declares_its_quirks():
    net = models.build(Config(model="whitened_convnet", width=0.125, stem_bias_epochs=2))
    assert net.init_images == 5000 and net.cam_layer is net.groups[-1]
    frozen = {id(p) for p in net.frozen_parameters()}
    assert id(net.stem.weight) in frozen and id(net.stem.bias) not in frozen
    net.set_epoch(1)
    assert net.stem.bias.requires_grad
    net.set_epoch(2)
    assert not net.stem.bias.requires_grad
    assert id(net.stem.bias) not in {
        id(p) for p in net.frozen_parameters()
    }  # off now, not for good


def test_an_ordinary_net_gets_the_defaults():
    class Plain(models.Net):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3)
            self.head = torch.nn.Linear(4, 10)

    net = Plain()
    net.stem.weight.requires_grad_(False)
    assert net.init_images == 0 and net.cam_layer is net.stem
    assert [id(p) for p in net.frozen_parameters()] == [id(net.stem.weight)]
    net.set_epoch(10)
    assert net.stem.bias.requires_grad  # nothing switched behind its back


def test_partial_tta_gives_the_views_to_the_least_sure_images_only():
    from resnetf.models import logits

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        plain, full = logits(net, x, "none"), logits(net, x, "flip_translate")
        half = logits(net, x, "flip_translate", fraction=0.5)
    unsure = plain.softmax(1).amax(1).argsort()[:8]  # the 8 lowest top probabilities
    sure = plain.softmax(1).amax(1).argsort()[8:]
    torch.testing.assert_close(half[unsure], full[unsure])
    torch.testing.assert_close(half[sure], plain[sure])


def test_the_muon_recipes_head_and_batchnorm_fields_reach_the_net():
    from resnetf.models import WhitenedConvNet, build

    cfg = Config(model="whitened_convnet", head_init_std=1.0, logit_scale=1 / 256, bn_momentum=0.3)
    net = build(cfg)
    assert net.fc.weight.std().item() == pytest.approx(1.0, rel=1e-5)
    assert net.logit_scale == 1 / 256
    assert {m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.3}
    default = build(Config(model="whitened_convnet"))
    assert default.logit_scale == WhitenedConvNet().logit_scale == 1 / 9
    assert {m.momentum for m in default.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.4}


def _airbench_whitening(images: torch.Tensor, eps: float = 5e-4) -> torch.Tensor:
    """airbench's formula, written out: 2x2 patches (C, h, w flattened), their uncentred second
    moment X^T X / N, eigenvectors over sqrt(eigenvalue + eps), largest first, both signs."""
    n, c, h, w = images.shape
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, c, 2, 2)
    flat = patches.reshape(len(patches), -1).double()
    eigenvalues, eigenvectors = torch.linalg.eigh(flat.T @ flat / len(flat))
    scaled = eigenvectors.T.flip(0).reshape(-1, c, 2, 2) / torch.sqrt(
        eigenvalues.flip(0) + eps
    ).view(-1, 1, 1, 1)
    return torch.cat([scaled, -scaled])


def test_the_whitening_filters_are_airbenchs():
    images = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.2
    net = models.WhitenedConvNet()
    net.init_from_data(images)
    expected = _airbench_whitening(images).float()
    # each filter is an eigenvector: equal up to its sign, which eigh may choose either way
    signs = torch.sign((net.stem.weight * expected).sum((1, 2, 3)))
    # (float32 sums over 61,504 patches here against float64 there: 1e-3 apart at most)
    torch.testing.assert_close(
        net.stem.weight, expected * signs.view(-1, 1, 1, 1), rtol=1e-3, atol=1e-3
    )
    assert (signs != 0).all()


def test_the_stem_bias_starts_at_zero_or_at_torchs_default():
    zero = models.build(Config(model="whitened_convnet", stem_bias_init="zero"))
    assert torch.count_nonzero(zero.stem.bias) == 0
    torch.manual_seed(0)
    default = models.build(Config(model="whitened_convnet", stem_bias_init="torch"))
    bound = 1 / 12**0.5  # nn.Conv2d's U(+-1/sqrt(fan_in)), fan_in = 3 x 2 x 2
    assert default.stem.bias.abs().max() <= bound and default.stem.bias.std() > bound / 4


def test_the_muon_recipe_runs_in_half_where_cuda_runs_it():
    from resnetf.config import load_experiment
    from resnetf.optim import precision

    cfg = load_experiment("experiments/fast94_muon.py")
    assert cfg.stem_bias_init == "torch" and cfg.amp_dtype == "auto_half"
    on_gpu = precision(cfg, torch.device("cuda"), cfg.batch_size)
    assert on_gpu.half and on_gpu.loss_scale == cfg.batch_size and on_gpu.scaler is None
    on_cpu = precision(cfg, torch.device("cpu"), cfg.batch_size)
    assert not on_cpu.half and on_cpu.loss_scale == 1
    assert precision(cfg.replace(amp_dtype="bf16"), torch.device("cpu"), 10).autocast is not None
