"""sadpipe: Semi-supervised Adaptive Distillation for RetinaNet detectors."""

__version__ = "0.1.0"
