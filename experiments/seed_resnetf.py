"""The course project's recipe, defects included: the baseline every change is measured against.

ResnetF with its softmax head fed to CrossEntropyLoss, a random 32x32 crop with no padding
(a no-op), no weight decay, plain momentum cycled by OneCycleLR, fp32; 24 epochs, batch 512.
"""

from resnetf import Config, main

CONFIG = Config(
    name="seed_resnetf",
    model="resnetf",
    softmax_head=True,
    dropout=0.1,
    pad=0,
    weight_decay=0.0,
    nesterov=False,
    cycle_momentum=True,
    amp=False,
)

if __name__ == "__main__":
    main(CONFIG, description=__doc__)
