import pytest
import torch

from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.boxes import BoxConvention
from sadpipe.modeling.postprocess import postprocess, postprocess_batch

pytestmark = pytest.mark.numerics  # compares against an independent reference (float tolerances)

LAYOUT = AnchorLayout(size_factor=1.0)
PADDED = (128, 128)


def _dense(num_classes=3):
    n = LAYOUT.anchors(PADDED).shape[0]
    return torch.full((n, num_classes), -10.0), torch.zeros(n, 4)


def test_threshold_nms_and_limit():
    logits, deltas = _dense()
    anchors = LAYOUT.anchors(PADDED)
    # P3 anchors 0 and 9 are the same-shaped anchor one cell apart (IoU 0.33 at 8-px anchors);
    # anchor 4 is the 10-px square at the origin overlapping anchor 0 heavily.
    logits[0, 1] = 3.0          # kept
    logits[4, 1] = 2.0          # IoU with anchor 0 > 0.5, same class → suppressed
    logits[4, 2] = 1.0          # other class → kept (NMS is per class)
    logits[9, 1] = torch.logit(torch.tensor(0.04))  # below 0.05 → dropped
    out = postprocess(logits, deltas, anchors, LAYOUT.level_sizes(PADDED), (128, 128))
    assert out["labels"].tolist() == [1, 2]
    torch.testing.assert_close(out["scores"], torch.sigmoid(torch.tensor([3.0, 1.0])))
    # zero deltas decode to the anchor itself, clipped to the image
    expected = anchors[0].clamp(min=0)
    torch.testing.assert_close(out["boxes"][0], expected)


def test_max_detections_per_image():
    logits, deltas = _dense(num_classes=1)
    logits[:, 0] = torch.linspace(0, 5, logits.shape[0])
    out = postprocess(logits, deltas, LAYOUT.anchors(PADDED), LAYOUT.level_sizes(PADDED), (128, 128),
                      max_dets=7)
    assert len(out["scores"]) == 7
    assert torch.all(out["scores"][:-1] >= out["scores"][1:])


def test_last_level_threshold():
    """Detectron keeps every P7 score > 0: a low score there survives, elsewhere it does not."""
    logits, deltas = _dense(num_classes=1)
    sizes = LAYOUT.level_sizes(PADDED)
    low = float(torch.logit(torch.tensor(0.01)))
    logits[0, 0] = low                      # P3
    logits[sum(sizes[:4]), 0] = low         # first P7 anchor
    anchors = LAYOUT.anchors(PADDED)
    default = postprocess(logits, deltas, anchors, sizes, (128, 128))
    quirk = postprocess(logits, deltas, anchors, sizes, (128, 128), last_level_score_thresh=0.0)
    assert len(default["scores"]) == 0
    # P7's own anchors (after NMS), led by the 0.01 one; P3's 0.01 stays below 0.05
    assert torch.isclose(quirk["scores"][0], torch.tensor(0.01))
    assert len(quirk["scores"]) <= sizes[4] and bool((quirk["boxes"][:, 2:] >= 32).all())


def _reference(logits, deltas, anchors, sizes, image_size, box_scale, *, topk, convention):
    """One image, one level at a time: threshold 0.05, the level's top ``topk``, decode,
    scale, clip, per-class NMS 0.5, the best 100 (the release's procedure, written plainly)."""
    scores, labels, idx, start = [], [], [], 0
    for level_logits, size in zip(logits.split(sizes), sizes):
        prob = torch.sigmoid(level_logits).flatten()
        keep = torch.nonzero(prob > 0.05).squeeze(1)
        prob, order = prob[keep].topk(min(topk, keep.numel()))
        keep = keep[order]
        scores.append(prob)
        labels.append(keep % logits.shape[1])
        idx.append(keep // logits.shape[1] + start)
        start += size
    scores, labels, idx = torch.cat(scores), torch.cat(labels), torch.cat(idx)
    boxes = convention.clip(convention.decode(deltas[idx], anchors[idx]) / box_scale, image_size)
    keep = convention.batched_nms(boxes, scores, labels, 0.5)[:100]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


@pytest.mark.parametrize("convention", [BoxConvention("torchvision"), BoxConvention("detectron")])
@pytest.mark.parametrize("topk", [1000, 7])
def test_batch_gives_each_image_what_it_gives_alone(convention, topk):
    """Four images with their own clipping frames and scales, one pass: every image's
    detections equal the per-image, per-level reference; topk 7 caps crowded levels."""
    generator = torch.Generator().manual_seed(0)
    anchors, sizes = LAYOUT.anchors(PADDED), LAYOUT.level_sizes(PADDED)
    logits = torch.randn(4, anchors.shape[0], 3, generator=generator) * 2 - 4
    deltas = torch.randn(4, anchors.shape[0], 4, generator=generator) * 0.2
    frames = [(128, 128), (100, 128), (128, 90), (64, 64)]
    scales = [1.0, 1.0, 0.8, 2.0]
    batch = postprocess_batch(logits, deltas, anchors, sizes, frames, box_scales=scales, topk=topk,
                              convention=convention)
    for i, got in enumerate(batch):
        expected = _reference(logits[i], deltas[i], anchors, sizes, frames[i], scales[i], topk=topk,
                              convention=convention)
        assert 0 < len(got["scores"]) <= 100
        assert torch.equal(got["labels"], expected["labels"])
        for key in ("boxes", "scores"):   # sigmoid over the batch or a level: may differ by an ulp
            torch.testing.assert_close(got[key], expected[key], rtol=1e-6, atol=1e-6)
