"""`python -m sadpipe.bench.inference`: the embedded val images it runs, its phases adding up to
what Predictor returns, and its table's last line."""
import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sadpipe.bench import inference as bench_inference
from sadpipe.checkpoint import load_model
from sadpipe.data.coco import read_coco_json
from sadpipe.data.toy import generate_toy_dataset
from sadpipe.engine.inference import Predictor
from tests.sadpipe.conftest import make_tiny_checkpoint


def test_toy_val_images_are_the_embedded_val_files(tmp_path):
    """The in-memory images are the decoded JPEGs `sadpipe toy-data` writes for the same seed."""
    with contextlib.redirect_stdout(io.StringIO()):
        split = generate_toy_dataset(tmp_path, seed=3, num_train=0, num_unlabeled=0,
                                     num_val=2)["splits"]["val"]
    files = [im["file_name"] for im in read_coco_json(split["annotation_file"])["images"]]
    rendered = bench_inference.toy_val_images(3, 2)
    for name, pixels in zip(sorted(files), rendered):
        assert np.array_equal(np.asarray(Image.open(Path(split["image_dir"]) / name).convert("RGB")),
                              pixels)


def test_phases_are_the_predictor(tmp_path):
    """prepare -> forward -> detections is what a Predictor call returns."""
    model, spec = load_model(make_tiny_checkpoint(tmp_path / "m.pt"))
    predictor = Predictor(model, spec)
    images = [np.random.default_rng(i).integers(0, 255, (50 + 7 * i, 70, 3), dtype=np.uint8)
              for i in range(3)]
    batch, recipes = predictor.prepare(images)
    phased = predictor.detections(predictor.forward(batch), recipes, tuple(batch.shape[-2:]))
    whole = predictor(images)
    assert len(whole) == 3 and any(len(d["scores"]) for d in whole)
    for a, b in zip(phased, whole):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key])


def test_cli_table_and_last_line(tmp_path):
    first = make_tiny_checkpoint(tmp_path / "a.pt", seed=0)
    second = make_tiny_checkpoint(tmp_path / "b.pt", seed=1)
    result = CliRunner().invoke(bench_inference.main, [str(first), str(second), "--images", "3",
                                                        "--batch-size", "2", "--repeats", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert "× first" in lines[1] and "1.00x" in lines[2]
    match = re.fullmatch(r"images_per_s: a\.pt=([\d.]+) b\.pt=([\d.]+)", lines[-1])
    assert match and all(float(v) > 0 for v in match.groups())


def test_compare_unfolded_runs_each_checkpoint_both_ways(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "a.pt")
    result = CliRunner().invoke(bench_inference.main, [str(path), "--images", "2", "--batch-size", "2",
                                                       "--repeats", "1", "--compare-unfolded"])
    assert result.exit_code == 0, result.output
    names = re.findall(r"(\S+)=[\d.]+", result.output.strip().splitlines()[-1])
    assert names == ["a.pt", "a.pt:unfolded"]


def test_gflops_are_the_convolutions_multiply_adds(tmp_path):
    """The count is 2 × (output elements × filter size) summed over every convolution the
    network runs (hooks on the modules: an independent count), per image."""
    model, spec = load_model(make_tiny_checkpoint(tmp_path / "m.pt"))
    predictor = Predictor(model, spec)
    images = [np.zeros(shape, np.uint8) for shape in ((64, 96, 3), (96, 64, 3), (64, 64, 3))]
    batches = bench_inference.batches_of(images, 2)
    flops = []
    for module in predictor.model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(
                lambda m, _, out: flops.append(2 * out.numel() * m.weight[0].numel()))
    for batch in batches:
        predictor.forward(predictor.prepare(batch)[0])
    expected = sum(flops) / len(images) / 1e9
    assert expected > 0
    assert bench_inference.forward_gflops(predictor, batches) == pytest.approx(expected, rel=1e-12)


def test_rows_report_medians_and_ratios(tmp_path, monkeypatch):
    """Medians per phase over the repeats, images/s from the median total, ratio to the first
    (time faked: model b's phases take twice model a's)."""
    paths = [make_tiny_checkpoint(tmp_path / f"{n}.pt", seed=i) for i, n in enumerate("ab")]
    calls = []

    def fake(predictor, batches):
        calls.append(predictor)
        scale = 1.0 if predictor is calls[0] else 2.0
        return {"prepare": 0.1 * scale, "forward": 0.5 * scale, "detections": 0.2 * scale}

    monkeypatch.setattr(bench_inference, "time_phases", fake)
    rows = bench_inference.bench(paths, [np.zeros((8, 8, 3), np.uint8)] * 4, batch_size=2,
                                 repeats=3)
    assert rows[0]["images_per_s"] == pytest.approx(4 / 0.8)
    assert rows[1]["ratio"] == pytest.approx(0.5)
    assert rows[1]["forward_ms"] == pytest.approx(1000 * 1.0 / 4)


def test_ratio_is_the_median_of_back_to_back_passes(tmp_path, monkeypatch):
    """A slow spell of the machine that hits one model's pass alone (pass 2) or both (pass 3)
    leaves the ratio at the passes' own 0.5; the ratio of the median totals would be 1/8."""
    paths = [make_tiny_checkpoint(tmp_path / f"{n}.pt", seed=i) for i, n in enumerate("ab")]
    passes = {"a": iter([1.0, 1.0, 1.0, 4.0]), "b": iter([2.0, 2.0, 8.0, 8.0])}   # warm-up first
    order = iter("ab" + "ab" * 3)

    def fake(predictor, batches):
        return {"prepare": 0.0, "forward": next(passes[next(order)]), "detections": 0.0}

    monkeypatch.setattr(bench_inference, "time_phases", fake)
    rows = bench_inference.bench(paths, [np.zeros((8, 8, 3), np.uint8)] * 4, batch_size=2,
                                 repeats=3)
    assert rows[1]["ratio"] == pytest.approx(0.5)
    assert (rows[1]["ratio_q1"], rows[1]["ratio_q3"]) == pytest.approx((0.125, 0.5))   # 1/8, 1/2, 1/2
    assert rows[0]["images_per_s"] / rows[1]["images_per_s"] == pytest.approx(8.0)


def test_batches_group_like_aspect_ratios():
    """Portrait and landscape images in alternation: file order (eval's) mixes them in every
    batch, aspect-ratio order gives batches of one orientation; both hold every image once."""
    tall, wide = np.zeros((30, 20, 3), np.uint8), np.zeros((20, 30, 3), np.uint8)
    images = [tall, wide] * 4
    in_order = bench_inference.batches_of(images, 4)
    assert all({im.shape for im in b} == {tall.shape, wide.shape} for b in in_order)
    grouped = bench_inference.batches_of(images, 4, aspect_order=True)
    assert [{im.shape for im in b} for b in grouped] == [{wide.shape}, {tall.shape}]
