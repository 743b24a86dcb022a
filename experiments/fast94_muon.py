"""airbench94_muon's recipe inside the framework: the whitened conv net trained with Muon on its
conv filters, 94.0% on CIFAR-10 in 8 epochs at batch 2000 (0.297 PFLOP; `python -m resnetf.bench
experiments/fast94_muon.py --flops`).

What changes against fast94 (from airbench94_muon's code): Muon (lr 0.24, momentum 0.6,
Nesterov, 3 Newton-Schulz steps, each filter bank rescaled to norm sqrt(out channels) first, no
weight decay) on the trainable conv filters; Nesterov SGD at momentum 0.85 for the head (lr 0.67
on a summed loss) and for the BatchNorm and whitening biases (lr 0.053), decoupled weight decay
2e-6 x batch size; every lr straight down from its peak to 0 from the first step, the whitening
bias's over its 3 epochs of training; no lookahead; the head's weights at unit std and the
logits over 256, the feature width.

    python experiments/fast94_muon.py [--seed=1 --tta_fraction=0.25 --epochs=7.6 ...]
"""

from resnetf import Config, main

KILOSTEP = 1024 * (1 + 1 / (1 - 0.85))  # the decoupled form's unit: per 1024 examples, momentum out

CONFIG = Config(
    name="fast94_muon",
    model="whitened_convnet",
    backend="gpu",
    dropout=0.0,
    epochs=8,
    batch_size=2000,
    optimizer="muon",
    muon_lr=0.24,
    muon_momentum=0.6,
    muon_ns_steps=3,
    momentum=0.85,
    decoupled=True,
    max_lr=0.67 * KILOSTEP,  # the head's SGD lr 0.67 on a summed loss
    bn_bias_lr=0.053 / 0.67,  # the biases' SGD lr 0.053
    weight_decay=2e-6 * KILOSTEP,  # 2e-6 x batch size per step, whatever the lr
    schedule="linear_decay",
    stem_bias_epochs=3,
    stem_bias_init="torch",  # airbench94_muon keeps nn.Conv2d's U(+-1/sqrt(12)); fast94: zero
    head_init_std=1.0,
    logit_scale=1 / 256,
    label_smoothing=0.2,
    pad=2,  # random translation by up to 2 px, reflect-padded
    alternating_flip=True,
    cutout=0,
    lookahead=0.0,
    tta="flip_translate",
    eval_every=0,
    sweep="sweeps/fast94_muon.yaml",
    amp_dtype="auto_half",  # the net in fp16, BatchNorm fp32, on CUDA (--amp_dtype=bf16: autocast)
)

if __name__ == "__main__":
    main(CONFIG, description=__doc__)
