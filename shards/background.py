"""Stand-ins for the background scores the sparse codec drops (one pyramid level at a time).

A dropped entry (anchor ``a`` in block ``b`` of a level, class ``c``) decodes to::

    q' = min(scale[c] * sigmoid(contrast[c] * u[b] + mean[c]), threshold)

``mean`` is the mean logit of the level's dropped scores of class ``c``; ``u`` (8 bits per block
of consecutive anchors, i.e. per feature-map cell with block = A) is the mean residual logit of
the block, the background "objectness" that all classes share. ``scale`` and ``contrast`` are
then set so that two reference students see the same adaptive distillation loss (ADL) on the
dropped entries as with the dense scores:

* the untrained student, p = PRIOR (RetinaNet's initial 0.01), and
* the student that matches the teacher, p = q.

For background scores the ADL of an entry with cross-entropy D is 0.5 * D * (1 - e^-D)^2 ≈
0.5 * D^3 (α = 0.5, γ = 2, β = 0), and D = a + q' b is linear in the teacher score (a =
-log(1-p), b = log((1-p)/p)), so both conditions are sums of cubics that per-block statistics
answer exactly. The fit therefore never needs the student: only the dense scores. It is
computed in one pass by :mod:`shards.encode`; this module defines the stand-ins and renders
them.
"""
import math

import numpy as np

PRIOR = 0.01  # an untrained RetinaNet head predicts sigmoid(bias) = 0.01
OFFSET_CODES = 127  # block offsets are int8 in [-127, 127] ...
OFFSET_STEP = 4.0 / OFFSET_CODES  # ... times this: u in [-4, 4] logit units
CONTRAST_MAX = 4.0
CONTRAST_STEPS = 20  # bisection steps on the contrast (resolution 4e-6)
SCALE_STEPS = 3  # Newton steps on the scale per contrast step (warm-started)
MIN_SCORE = 1e-12  # scores are clipped here before taking logs
PARAMS = ("mean", "scale", "contrast")  # rows of a level's (3, C) parameter array


def render_level(out, params, codes, *, threshold, block):
    """Write a level's stand-ins into ``out``: (n, C) float32. params: (3, C); codes: int8."""
    table = _stand_ins(params.astype(np.float64), threshold)  # (codes, C)
    rows = table.astype(np.float32)[codes.astype(np.intp) + OFFSET_CODES]  # (nblocks, C)
    full = out.shape[0] // block
    out[:full * block].reshape(full, block, -1)[:] = rows[:full, None, :]
    if full < len(rows):
        out[full * block:] = rows[full]


def num_blocks(level_sizes, block):
    """Total number of blocks (block offsets) of a view."""
    return sum(-(-int(n) // block) for n in level_sizes)


def _offset_grid():
    """(codes, 1) float64: the block offset u of each int8 code."""
    return (np.arange(2 * OFFSET_CODES + 1) - OFFSET_CODES)[:, None] * OFFSET_STEP


def _stand_ins(params, threshold):
    mean, scale, contrast = params
    return np.minimum(scale * _sigmoid(_offset_grid() * contrast + mean), threshold)


def prior_cross_entropy():
    """(a0, b0): CE(q, p=PRIOR) = a0 + q * b0, the untrained student's cross-entropy."""
    return -math.log1p(-PRIOR), math.log((1 - PRIOR) / PRIOR)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))
