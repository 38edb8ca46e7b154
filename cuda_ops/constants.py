"""Label codes and loss defaults, defined once for every layer.

``cuda_ops`` is the lowest layer (it imports neither ``shards`` nor ``sadpipe``), and this
module imports nothing at all, so ``import cuda_ops.constants`` loads no torch
(``cuda_ops/__init__`` loads its torch-using names lazily). The loss kernels' signatures,
the shard codec (``shards``), the training config and the detector (``sadpipe``) all take
these values from here by name. The values are the release's (README: conventions of the
release); the ADL's formula is in :mod:`cuda_ops.reference`.
"""

# Per-row labels (the detector's per-anchor label convention): c >= 0 is a foreground class.
IGNORE = -2  # row takes no part in the loss
BACKGROUND = -1  # row is negative for every class

# Sigmoid focal loss (Lin et al.).
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0

# Adaptive distillation loss (ADL).
ADL_ALPHA = 0.5  # weight of the positive part of the bracket
ADL_GAMMA = 2.0  # exponent of the adaptive weight ADW = (1 - exp(-D))^γ
ADL_BETA = 0.0  # entropy weight in D = CE - β·H(q)
NORMALIZER_POWER = 1.8  # θ of the ADL normaliser N = max(Σ q^θ, 1)
