"""The instance segmentation (IS) branch: torchvision Mask R-CNN trained on the pseudo instance labels.

Paper, "Instance segmentation branch": the IS branch is Mask R-CNN (He et al. 2017) with the loss
L_IS = L_cls + L_box + L_mask, whose mask targets are the pseudo labels made by CCGR (no annotated
mask is used). At test time "the inference only needs to take a forward pass through the IS branch"
(paper, "Overview"): :func:`wsis_core.instance_seg.engine.predict_instances` uses neither proposals nor CCGR.

Split as torchvision splits detection:

* :mod:`wsis_core.instance_seg.model`: the Mask R-CNN of a profile, built, rebuilt from a checkpoint;
* :mod:`wsis_core.instance_seg.targets`: the weak dataset + COCO pseudo labels as detection targets, and their
  loader;
* :mod:`wsis_core.instance_seg.engine`: the lr schedule, training, prediction and COCO conversion of the results.

Rounds (paper, "Iterative optimization"): the IS branch is retrained every round on the new pseudo
labels. Pass the previous round's model (same ``num_classes``) to warm-start it; the warm-up still
runs, so the new labels do not meet the full lr at once.
"""
