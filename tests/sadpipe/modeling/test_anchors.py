import torch

from sadpipe.modeling.anchors import AnchorLayout


def test_paper_sizes_and_count():
    layout = AnchorLayout()
    assert layout.num_anchors == 9
    assert layout.sizes()[0] == (32, 40, 50)
    assert layout.sizes()[4] == (512, 645, 812)
    # 128x128 input: grids 16, 8, 4, 2, 1 → (256 + 64 + 16 + 4 + 1) × 9 anchors
    assert layout.level_sizes((128, 128)) == [2304, 576, 144, 36, 9]
    assert layout.anchors((128, 128)).shape == (3069, 4)


def test_hand_computed_anchor_values():
    layout = AnchorLayout()
    cell = layout.cell_anchors(0)
    # ratio 0.5, size 32: w = 32·√2 = 45.25, h = 32/√2 = 22.63 → half sizes rounded 23, 11
    assert cell[0].tolist() == [-23.0, -11.0, 23.0, 11.0]
    # ratio 1, size 40
    assert cell[4].tolist() == [-20.0, -20.0, 20.0, 20.0]
    anchors = layout.anchors((128, 128))
    # P3, location y=1, x=2 (centre (16, 8)), anchor a=4
    index = (1 * 16 + 2) * 9 + 4
    assert anchors[index].tolist() == [-4.0, -12.0, 36.0, 28.0]
    # first P4 anchor follows the 2304 P3 anchors, centred at the origin, ratio 0.5 size 64
    assert anchors[2304].tolist() == [-45.0, -23.0, 45.0, 23.0]


def test_toy_layout_and_round_trip():
    layout = AnchorLayout(size_factor=1.0)
    assert layout.sizes()[0] == (8, 10, 12)
    assert AnchorLayout.from_dict(layout.to_dict()) == layout
    assert torch.equal(layout.anchors((256, 384))[:9], layout.cell_anchors(0))
