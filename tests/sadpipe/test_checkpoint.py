"""Checkpoints and the class-index rule: a file that lists its categories in another order
(made by hand or by another tool) is read in class-index order and predicts the same."""
import pytest
import torch

from sadpipe.checkpoint import load_checkpoint, load_model
from sadpipe.data.transforms import Preprocessing
from sadpipe.errors import UserError
from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.spec import ModelSpec
from tests.sadpipe.conftest import make_tiny_checkpoint

CATEGORIES = [{"id": 42, "name": "boat"}, {"id": 7, "name": "car"}, {"id": 99, "name": "person"}]
CLASS_IDS = [7, 42, 99]
CLS = "head.classification_head.cls_logits"


def stored_in_file_order(src, dst):
    """Rewrite checkpoint ``src`` as a tool that keeps a file's category order would have
    written it: categories as CATEGORIES lists them, class layer channels to match."""
    payload = torch.load(src, weights_only=True)
    position = [CLASS_IDS.index(c["id"]) for c in CATEGORIES]   # stored slot -> class index
    state = dict(payload["state_dict"])
    for name in ("weight", "bias"):
        tensor = state[f"{CLS}.{name}"]
        per_anchor = tensor.reshape(-1, len(CATEGORIES), *tensor.shape[1:])   # (A, C, ...)
        state[f"{CLS}.{name}"] = per_anchor[:, position].reshape(tensor.shape).clone()
    payload["model"]["categories"] = CATEGORIES
    payload["state_dict"] = state
    torch.save(payload, dst)
    return dst


def test_checkpoint_in_another_order_predicts_the_same(tmp_path):
    ours = make_tiny_checkpoint(tmp_path / "ours.pt", categories=CATEGORIES, cls_gain=4.0)
    assert [c["id"] for c in torch.load(ours, weights_only=True)["model"]["categories"]] == CLASS_IDS
    theirs = stored_in_file_order(ours, tmp_path / "theirs.pt")
    assert torch.load(theirs, weights_only=True)["model"]["categories"] == CATEGORIES

    model_a, spec_a = load_model(ours)
    model_b, spec_b = load_model(theirs)
    assert spec_b == spec_a and spec_b.category_ids == CLASS_IDS
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        (cls_a, box_a), (cls_b, box_b) = model_a(x), model_b(x)
    assert torch.equal(cls_a, cls_b) and torch.equal(box_a, box_b)
    a, b = load_checkpoint(ours)["state_dict"], load_checkpoint(theirs)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_with_a_category_twice_is_refused(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "m.pt", categories=CATEGORIES)
    payload = torch.load(path, weights_only=True)
    payload["model"]["categories"][2]["id"] = 42
    torch.save(payload, path)
    with pytest.raises(UserError, match=f"{path}: model.categories: id 42 is used twice"):
        load_model(path)


def test_model_spec_holds_classes_in_class_order():
    layout, prep = AnchorLayout(), Preprocessing(min_size=64, max_size=128)
    ModelSpec("toy_student", ((7, "car"), (42, "boat")), layout, prep)
    with pytest.raises(ValueError, match="class-index order"):
        ModelSpec("toy_student", ((42, "boat"), (7, "car")), layout, prep)
