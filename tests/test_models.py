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
