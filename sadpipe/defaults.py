"""Defaults that a torch-free module and a torch-using one share, defined once.

A command's options and ``--help`` text, and the training config, are read without loading
torch (``sadpipe --help`` and config checks stay fast); the engines and the model code that
use the same values load it. So the values live here, in a module that imports nothing, and
both sides import them by name. They are not loss defaults of ``cuda_ops``: the label codes
and the focal and ADL parameters (α, γ, β, the normaliser power θ) that ``cuda_ops``,
``shards`` and ``sadpipe`` share are in :mod:`cuda_ops.constants`, the lowest layer.
"""

# sadpipe pseudo-label
PSEUDO_LABEL_SCORE_THRESH = 0.5  # teacher boxes scoring at least this become pseudo-labels
PSEUDO_LABEL_BATCH_SIZE = 4      # images per teacher forward pass
FAINT_FLOOR = 0.1                # --draw pictures: weakest teacher box drawn (faint)

# the detector's box loss (config loss.smooth_l1_beta)
SMOOTH_L1_BETA = 0.11
