"""Pictures of detections: boxes land where the detections say (pixel checks), labels stay
inside the picture, the same images are chosen for the same seed, folders appear whole."""
import numpy as np
import pytest
from PIL import Image

from sadpipe.evaluation import draw
from sadpipe.evaluation.draw import (
    BOX_WIDTH,
    GT_COLOURS,
    choose_images,
    class_colour,
    draw_boxes,
    grid,
    picture_name,
    upscale_factor,
    write_pictures,
)

BACKGROUND = (0, 0, 0)
SIZE = 100                      # a blank SIZE x SIZE image
BOX = (20, 40, 60, 80)          # xyxy: columns 20..59, rows 40..79
NAMES = ["square", "disc", "star"]


def blank(size=SIZE):
    return np.zeros((size, size, 3), np.uint8)


def pixel(picture, x, y):
    return picture.getpixel((x, y))[:3]


def test_a_box_lands_where_the_detection_says():
    picture = draw_boxes(blank(), [BOX], [1], [0.9], NAMES, min_short_side=0)
    assert picture.size == (SIZE, SIZE)
    colour = class_colour(1)
    x0, y0, x1, y1 = BOX
    middle_x, middle_y = (x0 + x1) // 2, (y0 + y1) // 2
    for x, y in [(x0, middle_y), (x1 - 1, middle_y), (middle_x, y1 - 1),   # the edges
                 (x0 + BOX_WIDTH - 1, middle_y), (x1 - BOX_WIDTH, middle_y)]:
        assert pixel(picture, x, y) == colour, (x, y)
    for x, y in [(x0 - 1, middle_y), (x1, middle_y), (middle_x, y1),       # just outside
                 (x0 + BOX_WIDTH, middle_y), (middle_x, middle_y)]:        # inside
        assert pixel(picture, x, y) == BACKGROUND, (x, y)


def test_small_images_are_enlarged_and_boxes_with_them():
    image = blank(50)
    factor = upscale_factor(50, 50)
    assert factor > 1 and 50 * factor >= draw.MIN_SHORT_SIDE
    picture = draw_boxes(image, [[10, 10, 30, 30]], [0], [0.5], NAMES)
    assert picture.size == (50 * factor, 50 * factor)
    middle = 20 * factor
    assert pixel(picture, 10 * factor, middle) == class_colour(0)
    assert pixel(picture, 10 * factor - 1, middle) == BACKGROUND
    assert pixel(picture, 30 * factor - 1, middle) == class_colour(0)
    assert pixel(picture, 30 * factor, middle) == BACKGROUND


@pytest.mark.parametrize("width, height, factor", [(128, 192, 2), (160, 224, 2), (100, 100, 4),
                                                   (640, 480, 1), (400, 60, 1), (50, 50, 7)])
def test_upscale_factor(width, height, factor):
    assert upscale_factor(width, height) == factor


def test_label_stays_inside_the_picture():
    """A box in the top-right corner: its label cannot go above it nor past the right edge."""
    picture = draw_boxes(blank(), [[90, 0, 100, 10]], [2], [0.75], NAMES, min_short_side=0)
    colour = class_colour(2)
    assert pixel(picture, SIZE - 1, 0) == colour
    # the tag (filled with the class colour) reaches the right edge from inside
    row = [pixel(picture, x, 1) for x in range(SIZE)]
    assert row.count(colour) > 20
    big = draw_boxes(blank(), [[0, 0, 100, 100]], [0], [0.5], NAMES, min_short_side=0)
    assert pixel(big, 1 + BOX_WIDTH, 1 + BOX_WIDTH) != BACKGROUND   # the tag, inside the box


def test_ground_truth_is_dashed_black_and_white():
    picture = draw_boxes(blank(), [], [], [], NAMES, ground_truth=[BOX], min_short_side=0)
    x0, y0, x1, _ = BOX
    top_edge = {pixel(picture, x, y0) for x in range(x0, x1)}
    assert set(GT_COLOURS) <= top_edge | {BACKGROUND}
    assert (255, 255, 255) in top_edge
    assert pixel(picture, (x0 + x1) // 2, y0 + 1) == BACKGROUND     # one pixel thin


def test_boxes_under_the_threshold_are_faint_dashed_and_unlabelled():
    picture = draw_boxes(blank(), [BOX], [0], [0.2], NAMES, faint_below=0.5, min_short_side=0)
    colour = np.array(class_colour(0))
    x0, y0, x1, _ = BOX
    top_edge = np.array([pixel(picture, x, y0) for x in range(x0, x1)])
    drawn = top_edge[top_edge.any(axis=1)]
    assert 0 < len(drawn) < len(top_edge)                             # dashes and gaps
    assert (drawn < colour).any(axis=1).all() and (drawn <= colour).all()   # blended: fainter
    assert pixel(picture, x0, y0 - 3) == BACKGROUND                     # no label tag above


def test_accepts_pil_images_and_refuses_other_arrays():
    picture = draw_boxes(Image.new("L", (SIZE, SIZE)), [BOX], [0], [0.9], NAMES,
                         min_short_side=0)
    assert picture.mode == "RGB" and pixel(picture, BOX[0], 60) == class_colour(0)
    with pytest.raises(ValueError, match="RGB uint8"):
        draw_boxes(np.zeros((10, 10), np.float32), [], [], [], NAMES)


def test_same_seed_same_images_whatever_the_order():
    ids = list(range(100, 200, 3))
    chosen = choose_images(ids, 5, seed=0)
    assert len(chosen) == 5 and chosen == sorted(chosen) and set(chosen) <= set(ids)
    assert choose_images(reversed(ids), 5, seed=0) == chosen
    assert choose_images(ids, 5, seed=1) != chosen
    assert set(choose_images(ids, 3, seed=0)) <= set(chosen)   # fewer: a subset
    assert choose_images(ids, 500, seed=0) == sorted(ids)
    assert choose_images(ids, 0, seed=0) == [] and choose_images([], 3, seed=0) == []


def test_write_pictures_replaces_the_folder_whole(tmp_path):
    folder = tmp_path / "drawings"
    folder.mkdir()
    (folder / "old.png").write_bytes(b"old")
    picture = Image.new("RGB", (4, 4))
    paths = write_pictures(folder, [(picture_name(7), picture), (picture_name(12), picture)])
    assert [p.name for p in paths] == ["000000000007.png", "000000000012.png"]
    assert sorted(p.name for p in folder.iterdir()) == [p.name for p in paths]
    assert [p.name for p in tmp_path.iterdir()] == ["drawings"]

    def failing():
        yield picture_name(1), picture
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_pictures(tmp_path / "other", failing())
    assert [p.name for p in tmp_path.iterdir()] == ["drawings"]   # nothing half-written


def test_grid_places_pictures_in_rows_and_columns():
    red, blue = Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (30, 40), (0, 0, 255))
    sheet = grid([[red, blue], [None, red]], column_titles=["a", "b"], row_titles=["r1", "r2"],
                 cell_size=50)
    assert sheet.width > 2 * 50 and sheet.height > 40 + 30
    colours = {sheet.getpixel((x, y)) for x in range(sheet.width) for y in range(sheet.height)}
    assert {(255, 0, 0), (0, 0, 255)} <= colours
