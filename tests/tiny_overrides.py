"""Profile overrides that make a whole round of the real stages take a couple of minutes on 2 CPU cores.

Whole-box crops (``pseudo.crop_threshold`` 0): the tests using these check the pipeline's contracts, not what a
few CPU steps learn, and whole-box crops guarantee every round has pseudo labels to train the IS branch on.
"""

TINY_OVERRIDES = {
    "input_size": 64, "cls.epochs": 4, "aff.epochs": 1, "seg.epochs": 4, "mil.epochs": 1,
    "instance.epochs": 2, "instance.batch_size": 4, "instance.min_size": 64, "instance.max_size": 64,
    "ccgr.iters": 5, "mil.proposal_workers": 1, "mil.proposal_max": 100, "infer_batch_size": 8, "mil.hidden": 64,
    "instance.proposals": 50, "instance.rois": 16, "instance.mask_channels": 16,
    "pseudo.crop_mode": "threshold", "pseudo.crop_threshold": 0.0,
}
