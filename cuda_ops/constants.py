"""Label codes shared by every backend (the detector's per-anchor label convention)."""

IGNORE = -2  # row takes no part in the loss
BACKGROUND = -1  # row is negative for every class

