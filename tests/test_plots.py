"""Every run folder's curves.png."""

import numpy as np
import pytest
from PIL import Image

from conftest import run_dir_of
from resnetf import run


@pytest.mark.slow
def test_every_run_folder_draws_its_own_curves(tiny_cfg):
    d = run_dir_of(run(tiny_cfg.replace(analysis=False, val_size=20)))
    with Image.open(d / "curves.png") as image:
        assert image.size == (1500, 450)
        pixels = np.asarray(image.convert("L"))
    # three panels with lines in them, not three empty frames: plenty of non-white pixels
    assert (pixels < 200).mean() > 0.02


def test_figures_switch_no_global_backend(tiny_cfg):
    """A notebook's inline backend survives a run that draws its figures: every figure is a bare
    matplotlib Figure, pyplot's backend is never switched."""
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        run(tiny_cfg.replace(gradcam_images=1))
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
