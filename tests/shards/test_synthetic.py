"""The teacher-like score generator imitates the statistics it documents."""
import numpy as np
import pytest

from shards import teacher_like_scores

COCO_LEVELS = [84375, 21546, 5472, 1440, 360]  # 600 x 1000 input, A = 9


@pytest.fixture(scope="module")
def coco_scores():
    return teacher_like_scores(sum(COCO_LEVELS), 80, level_sizes=COCO_LEVELS,
                               rng=np.random.default_rng(0))


def test_background_is_mostly_between_1e5_and_1e2(coco_scores):
    q = coco_scores
    assert q.dtype == np.float32 and q.shape == (113193, 80)
    assert 0 < q.min() and q.max() < 1
    assert ((q >= 1e-5) & (q <= 1e-2)).mean() > 0.95
    assert 1e-4 < np.median(q) < 1e-3


def test_a_few_hundred_anchors_near_objects_for_one_or_two_classes(coco_scores):
    confident = coco_scores >= 0.05
    anchors = confident.any(axis=1)
    assert 100 <= anchors.sum() <= 2000
    assert confident[anchors].sum(axis=1).max() <= 2
    assert coco_scores.max() <= 0.95 + 1e-6


def test_same_rng_same_scores_and_bad_sizes_refused():
    a = teacher_like_scores(90, 4, level_sizes=[72, 18], rng=np.random.default_rng(1))
    b = teacher_like_scores(90, 4, level_sizes=[72, 18], rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="level_sizes"):
        teacher_like_scores(91, 4, level_sizes=[72, 18], rng=np.random.default_rng(1))
