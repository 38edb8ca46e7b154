import math

import pytest
import torch

from sadpipe.modeling.boxes import BoxConvention

TORCHVISION, DETECTRON = BoxConvention("torchvision"), BoxConvention("detectron")
ANCHORS = torch.tensor([[0.0, 0.0, 31.0, 15.0], [-8.0, -20.0, 15.0, 27.0]])


def test_detectron_decoding_is_plus_one():
    # zero deltas give the anchor back; dw = log 2 doubles the +1 width around the +1 centre
    torch.testing.assert_close(DETECTRON.decode(torch.zeros(2, 4), ANCHORS), ANCHORS)
    box = DETECTRON.decode(torch.tensor([[0.0, 0.0, math.log(2), 0.0]]), ANCHORS[:1])
    torch.testing.assert_close(box, torch.tensor([[-16.0, 0.0, 47.0, 15.0]]))
    # dw is clipped at log(1000/16): x2 = centre 16 + 32 · 62.5 / 2 − 1
    huge = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    assert DETECTRON.decode(huge, ANCHORS[:1])[0, 2].item() == pytest.approx(1015.0)


@pytest.mark.parametrize("convention", [TORCHVISION, DETECTRON])
def test_encode_inverts_decode(convention):
    boxes = torch.tensor([[2.0, 3.0, 40.0, 17.0], [-5.0, -11.0, 20.0, 30.0]])
    torch.testing.assert_close(convention.decode(convention.encode(boxes, ANCHORS), ANCHORS), boxes)


def test_clip_and_results():
    boxes = torch.tensor([[-3.0, 2.0, 120.0, 90.0]])
    assert DETECTRON.clip(boxes, (60, 100)).tolist() == [[0.0, 2.0, 99.0, 59.0]]
    assert TORCHVISION.clip(boxes, (60, 100)).tolist() == [[0.0, 2.0, 100.0, 60.0]]
    assert DETECTRON.to_xywh(torch.tensor([[1.0, 2.0, 10.0, 4.0]])).tolist() == [[1.0, 2.0, 10.0, 3.0]]
    assert TORCHVISION.to_xywh(torch.tensor([[1.0, 2.0, 10.0, 4.0]])).tolist() == [[1.0, 2.0, 9.0, 2.0]]


def test_nms_rules():
    """Detectron suppresses IoU >= 0.5 with +1 areas; torchvision IoU > 0.5 without."""
    scores, classes = torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.int64)
    legacy_half = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 4.0]])   # 50 / 100
    assert DETECTRON.iou(legacy_half[:1], legacy_half[1:]).item() == 0.5
    assert DETECTRON.batched_nms(legacy_half, scores, classes, 0.5).tolist() == [0]
    assert TORCHVISION.batched_nms(legacy_half, scores, classes, 0.5).tolist() == [0, 1]  # 36/81
    half = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])              # 50 / 100
    assert TORCHVISION.iou(half[:1], half[1:]).item() == 0.5
    assert TORCHVISION.batched_nms(half, scores, classes, 0.5).tolist() == [0, 1]
