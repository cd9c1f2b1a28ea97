"""Datasets: VOC and COCO readers, the weak (training) and ground-truth (evaluation) views, synthetic data."""
