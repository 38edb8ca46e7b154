"""The project's one module of shared defaults: label codes, loss defaults, and the detector
and command defaults that a torch-free module and a torch-using one both need.

``cuda_ops`` is the lowest layer (it imports neither ``shards`` nor ``sadpipe``), and this
module imports nothing at all, so ``import cuda_ops.constants`` loads no torch
(``cuda_ops/__init__`` loads its torch-using names lazily): the loss kernels' signatures,
the shard codec (``shards``), the training config, ``--help`` texts and the detector
(``sadpipe``) all take these values from here by name. The values are the release's (README:
conventions of the release); the ADL's formula is in :mod:`cuda_ops.reference`.
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

# The detector's box loss (config loss.smooth_l1_beta).
SMOOTH_L1_BETA = 0.11

# sadpipe pseudo-label.
PSEUDO_LABEL_SCORE_THRESH = 0.5  # teacher boxes scoring at least this become pseudo-labels
PSEUDO_LABEL_BATCH_SIZE = 4      # images per teacher forward pass
FAINT_FLOOR = 0.1                # --draw pictures: weakest teacher box drawn (faint)

# Numeric precision of a network's forward pass (sadpipe/engine/precision.py): --precision
# and distill.teacher_precision for teachers and evaluated models, solver.amp for training.
FP32 = "fp32"
PRECISIONS = (FP32, "bf16", "fp16")   # fp32, or autocast to bfloat16 / float16
AMP_OFF = "off"
AMP_MODES = (AMP_OFF, "bf16", "fp16")
