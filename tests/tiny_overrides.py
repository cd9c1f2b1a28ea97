"""Profile overrides that make a whole round of the real stages take a couple of minutes on 2 CPU cores.

Whole-box crops (``crop_threshold`` 0): the tests using these check the pipeline's contracts, not what a
few CPU steps learn, and whole-box crops guarantee every round has pseudo labels to train the IS branch on.
"""

TINY_OVERRIDES = {
    "input_size": 64, "cls_epochs": 4, "aff_epochs": 1, "seg_epochs": 4, "mil_epochs": 1,
    "is_epochs": 2, "is_batch_size": 4, "is_min_size": 64, "is_max_size": 64, "ccgr_iters": 5,
    "proposal_workers": 1, "proposal_max": 100, "infer_batch_size": 8, "mil_hidden": 64,
    "is_proposals": 50, "is_rois": 16, "is_mask_channels": 16,
    "crop_mode": "threshold", "crop_threshold": 0.0,
}
