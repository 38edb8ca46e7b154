"""sadpipe: Semi-supervised Adaptive Distillation for RetinaNet detectors.

*The release*, in the docstrings as in the README, is the SAD authors' original
implementation and models, on Detectron (Caffe2); sadpipe follows its conventions (README:
conventions of the release) and imports its models (:mod:`sadpipe.convert`).
"""

__version__ = "0.1.0"
