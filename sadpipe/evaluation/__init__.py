"""COCO box evaluation (pycocotools), precision–recall plots and console tables."""
from sadpipe.evaluation.coco_eval import STAT_NAMES, evaluate_detections
from sadpipe.evaluation.plots import plot_pr_curve, plot_pr_curves, read_pr_curve

__all__ = ["STAT_NAMES", "evaluate_detections", "plot_pr_curve", "plot_pr_curves",
           "read_pr_curve"]
