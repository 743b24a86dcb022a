"""airbench94's recipe inside the framework: 94% on CIFAR-10 (90.6% on the JPEG set) in about a
third of ResNet-9's compute per image and 9.9 epochs (0.358 PFLOP; `python -m resnetf.bench
experiments/fast94.py --flops`).

The whitened conv net (frozen 2x2 whitening stem, 64-256-256), Nesterov SGD at momentum 0.85 with
airbench94's published hyperparameters in their decoupled form (lr 11.5 and weight decay 0.0153
per 1024 examples; BatchNorm biases at 64x the lr), a One Cycle triangle from 0.2x to the peak at
23% of the steps and down to 0.07x, label smoothing 0.2, lookahead averaging, 2-pixel
translations and the alternating flip on the GPU, no cutout, and test-time flips and 1-pixel
translations, evaluated once at the end.

    python experiments/fast94.py [--seed=1 --epochs=12 ...]
"""

from resnetf import Config, main

CONFIG = Config(
    name="fast94",
    model="whitened_convnet",
    backend="gpu",
    dropout=0.0,
    epochs=9.9,
    batch_size=1024,
    momentum=0.85,
    decoupled=True,
    max_lr=11.5,  # per 1024 examples: SGD's lr 1.5 at batch 1024
    weight_decay=0.0153,  # per 1024 examples, whatever the lr
    bn_bias_lr=64.0,
    label_smoothing=0.2,
    pct_start=0.23,
    div_factor=5.0,  # start at 0.2x the peak
    final_div_factor=0.2 / 0.07,  # end at 0.07x the peak
    pad=2,  # random translation by up to 2 px, reflect-padded
    alternating_flip=True,
    cutout=0,
    lookahead=0.95,
    tta="flip_translate",
    eval_every=0,
    sweep="sweeps/fast94.yaml",  # its search space, in the decoupled lr's units
)

if __name__ == "__main__":
    main(CONFIG, description=__doc__)
