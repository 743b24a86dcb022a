"""LR range test for oc_24ep's model and data path: prints a suggested max_lr and saves the
loss-vs-LR curve (PNG, also logged to W&B). Same as `experiments/oc_24ep.py --lr_range_test`.
"""

from oc_24ep import CONFIG  # the file beside this one

from resnetf import main

if __name__ == "__main__":
    main(CONFIG.replace(lr_range_test=True), description=__doc__)
