"""ResNet-9 on CIFAR-10 in 24 epochs: One Cycle LR, pad+crop / flip / 8x8 cutout, bf16.

The DAWNBench ResNet-9 recipe (peak LR 0.4 at epoch 5, Nesterov SGD, weight decay 5e-4) with
label smoothing and flip test-time augmentation on top.

    python experiments/oc_24ep.py [--max_lr=0.4 --epochs=24 ...]   (--help lists every field)
"""

from resnetf import Config, main

CONFIG = Config(
    name="oc_24ep",
    model="resnet9",
    dropout=0.0,
    max_lr=0.4,
    pct_start=5 / 24,  # the peak at epoch 5 of 24, as in the DAWNBench schedule
    div_factor=20.0,  # start at 0.02
    final_div_factor=200.0,  # end at 1e-4, near the DAWNBench schedule's 0
    label_smoothing=0.2,
    tta="flip",
)

if __name__ == "__main__":
    main(CONFIG, description=__doc__)
