import pytest
import torch

from sadpipe.modeling.boxes import box_coder
from sadpipe.modeling.targets import BACKGROUND, IGNORE, build_targets, match_anchors

pytestmark = pytest.mark.numerics  # compares against an independent reference (float tolerances)

ANCHORS = torch.tensor([
    [0, 0, 10, 10],      # IoU 1.0 with box A          → class 3
    [0, 0, 10, 18],      # IoU 100/180 = 0.556 with A  → class 3
    [0, 0, 10, 22],      # IoU 100/220 = 0.455 with A  → ignored
    [0, 0, 10, 30],      # IoU 0.333 with A            → background
    [50, 50, 60, 60],    # no overlap                  → background
    [100, 100, 120, 120],  # IoU 400/900 = 0.444 with B, but B's best anchor → class 1
    [100, 100, 110, 110],  # IoU 0.111 with B          → background
], dtype=torch.float32)
BOXES = torch.tensor([[0, 0, 10, 10], [100, 100, 130, 130]], dtype=torch.float32)
LABELS = torch.tensor([3, 1])


def test_thresholds_ignore_band_and_best_anchor_rule():
    labels, matched = match_anchors(ANCHORS, BOXES, LABELS)
    assert labels.tolist() == [3, 3, IGNORE, BACKGROUND, BACKGROUND, 1, BACKGROUND]
    assert torch.equal(matched[5], BOXES[1])
    assert torch.equal(matched[1], BOXES[0])


def test_no_boxes_is_all_background():
    labels, _ = match_anchors(ANCHORS, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert (labels == BACKGROUND).all()


def test_regression_targets_hand_computed():
    labels, deltas = build_targets(ANCHORS, [{"boxes": BOXES, "labels": LABELS}])
    assert labels.shape == (1, 7) and deltas.shape == (1, 7, 4)
    assert torch.allclose(deltas[0, 0], torch.zeros(4))
    # anchor 1 (centre (5, 9), 10x18) → box A (centre (5, 5), 10x10)
    expected = torch.tensor([0.0, (5 - 9) / 18, 0.0, torch.log(torch.tensor(10 / 18))])
    assert torch.allclose(deltas[0, 1], expected, atol=1e-6)
    decoded = box_coder().decode_single(deltas[0, :2], ANCHORS[:2])
    assert torch.allclose(decoded, BOXES[[0, 0]], atol=1e-4)


# a crowd region over the lower right of the picture: x 40..70, y 40..70
CROWD = torch.tensor([[40, 40, 70, 70]], dtype=torch.float32)
CROWD_ANCHORS = torch.tensor([
    [50, 50, 60, 60],    # inside the crowd: covered 100 %          → ignored
    [35, 45, 45, 55],    # half inside: covered 50 % < 70 %         → background
    [38, 40, 48, 50],    # 8 of 10 columns inside: covered 80 %     → ignored
    [0, 0, 10, 10],      # IoU 1.0 with box A, outside the crowd    → class 3
    [200, 200, 210, 210],  # far from everything                    → background
], dtype=torch.float32)


def test_anchors_mostly_inside_a_crowd_region_are_ignored():
    labels, _ = match_anchors(CROWD_ANCHORS, BOXES[:1], LABELS[:1], crowd_boxes=CROWD)
    assert labels.tolist() == [IGNORE, BACKGROUND, IGNORE, 3, BACKGROUND]
    without, _ = match_anchors(CROWD_ANCHORS, BOXES[:1], LABELS[:1])
    assert without.tolist() == [BACKGROUND, BACKGROUND, BACKGROUND, 3, BACKGROUND]


def test_a_crowd_region_does_not_take_an_object_away():
    """An object inside a crowd region keeps its foreground anchors."""
    inner = torch.tensor([[50, 50, 60, 60]], dtype=torch.float32)
    labels, _ = match_anchors(CROWD_ANCHORS, inner, torch.tensor([2]), crowd_boxes=CROWD)
    assert labels.tolist() == [2, BACKGROUND, IGNORE, BACKGROUND, BACKGROUND]


def test_crowd_regions_alone_and_in_build_targets():
    none = torch.zeros(0, 4)
    labels, _ = match_anchors(CROWD_ANCHORS, none, torch.zeros(0, dtype=torch.int64),
                              crowd_boxes=CROWD)
    assert labels.tolist() == [IGNORE, BACKGROUND, IGNORE, BACKGROUND, BACKGROUND]
    batch, _ = build_targets(CROWD_ANCHORS, [
        {"boxes": BOXES[:1], "labels": LABELS[:1], "crowd_boxes": CROWD},
        {"boxes": BOXES[:1], "labels": LABELS[:1]}])
    assert batch[0].tolist() == [IGNORE, BACKGROUND, IGNORE, 3, BACKGROUND]
    assert batch[1].tolist() == [BACKGROUND, BACKGROUND, BACKGROUND, 3, BACKGROUND]


def _random_batch(generator, n, *, crowd: bool):
    targets = []
    for i in range(n):
        k = int(torch.randint(0, 6, (1,), generator=generator))  # some images without boxes
        xy = torch.rand(k, 2, generator=generator) * 140
        wh = 4 + torch.rand(k, 2, generator=generator) * 70
        t = {"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 10, (k,), generator=generator)}
        if crowd and i % 2:
            t["crowd_boxes"] = torch.tensor([[20.0, 30.0, 90.0, 100.0]])
        targets.append(t)
    return targets


@pytest.mark.parametrize("convention", ["torchvision", "detectron"])
@pytest.mark.parametrize("crowd", [False, True])
def test_batched_targets_equal_image_by_image_matching(convention, crowd):
    """build_targets matches the whole batch at once; labels equal match_anchors' (torchvision's
    Matcher) image by image, and so do the regression targets of every foreground anchor."""
    from sadpipe.modeling.anchors import AnchorLayout
    from sadpipe.modeling.boxes import BoxConvention

    generator = torch.Generator().manual_seed(0)
    anchors = AnchorLayout(size_factor=2.0).anchors((160, 224))
    boxes = BoxConvention(convention)
    for _ in range(5):
        targets = _random_batch(generator, 6, crowd=crowd)
        labels, deltas = build_targets(anchors, targets, convention=boxes)
        for i, t in enumerate(targets):
            want, matched = match_anchors(anchors, t["boxes"], t["labels"],
                                          crowd_boxes=t.get("crowd_boxes"), convention=boxes)
            assert torch.equal(labels[i], want)
            fg = want >= 0
            assert torch.equal(deltas[i][fg], boxes.encode(matched, anchors)[fg])
