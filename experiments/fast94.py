"""The fastest recipe here to airbench94's accuracy (90.6% on the JPEG set, 94% on CIFAR-10).

oc_24ep's ResNet-9 and One Cycle schedule, shortened, with the data held and augmented on the
GPU, evaluated only at the end. EPOCHS was picked on a validation split carved from the
training set (--val_size=5000), never on the test split; see the README's results.

    python experiments/fast94.py [--epochs=14 --compile ...]
"""
from resnetf import Config, main

CONFIG = Config(
    name="fast94",
    model="resnet9",
    backend="gpu",
    dropout=0.0,
    epochs=14,
    max_lr=0.4,
    pct_start=0.25,
    div_factor=20.0,
    final_div_factor=200.0,
    label_smoothing=0.2,
    tta_flip=True,
    eval_every=0,
)

if __name__ == "__main__":
    main(CONFIG, description=__doc__)
