"""Mixed precision on CPU: a bf16 training step against fp32, fp16 loss scaling and its
non-finite stop, the teacher's precision recorded in the cache and checked by training,
``--precision`` of the inference commands, and pinned batches for a CUDA device."""
import inspect
import json

import pytest
import torch
from click.testing import CliRunner

from sadpipe.commands.cache_logits import command as cache_command
from sadpipe.commands.evaluate import command as eval_command
from sadpipe.commands.pseudo_label import command as pseudo_label_command
from sadpipe.commands.train import command as train_command
from sadpipe.config import load_config
from sadpipe.data.coco import read_coco_json
from sadpipe.engine import cache_logits, inference, pseudo_label
from sadpipe.engine.distributed import DistInfo
from sadpipe.engine.precision import grad_scaler
from sadpipe.engine.run_dir import RunDir
from sadpipe.engine.settings import DistillSettings, LossSettings, SolverSettings
from sadpipe.engine.shard_stream import check_teacher_precision, place_views, shard_loader
from sadpipe.engine.streams import coco_loader, coco_stream
from sadpipe.engine.teacher import Teacher
from sadpipe.engine.trainer import model_spec_from_config, step_losses, update
from sadpipe.errors import UserError
from sadpipe.modeling.anchors import AnchorLayout
from sadpipe.modeling.distill import to_batch_layout
from tests.sadpipe.conftest import (
    assert_one_line_error,
    make_tiny_checkpoint,
    tiny_train_overrides,
    write_tiny_coco,
)
from tests.sadpipe.engine.test_cache_logits import make_teacher

# A training step of the zoo-pretrained toy student (tiny batches of 2 images, a random
# teacher for the ADL) in bf16 against fp32, measured over seeds 0-5 of this setting (with
# AVX-512 and with AVX2 kernels alike): loss terms within 4.7e-3 relative (box; focal
# 1.6e-3, ADL 5.0e-4), the whole gradient within 7.3e-2 of its norm, cosine >= 0.99736.
# bf16 keeps 8 bits of mantissa, so the body's gradient (a sum of many rounded terms) moves
# most. Tolerances: ~3x those.
BF16_LOSS_RTOL = 1.5e-2
BF16_GRAD_RTOL = 0.2
BF16_GRAD_COSINE = 0.99
# The teacher's float32 probabilities, computed at bf16: the logits round to 8 bits of
# mantissa (relative 2^-9), so a probability moves by up to ~|logit| * 2^-9 * p(1-p).
BF16_PROB_ATOL = 2e-2
PRECISION_SHARDS = 2     # images per tiny cache


# ------------------------------------------------------------------------------ helpers


def _tiny_setup(tmp_path, seed=0):
    """(cfg, spec, batch): a batch of 2 images of the tiny data, with random teacher scores
    on every anchor; the config takes the zoo's pretrained toy-student body."""
    ann, images = write_tiny_coco(tmp_path / "data", num_images=2, seed=seed)
    cfg = load_config(None, tiny_train_overrides(ann, images, **{"model.pretrained": "true"}))
    spec = model_spec_from_config(cfg, read_coco_json(ann)["categories"])
    batch = next(coco_stream(ann, images, spec, cfg, DistInfo(), start_batch=0))
    n = batch["images"].shape[0]
    hwa = spec.anchor_layout.anchors(tuple(batch["images"].shape[-2:])).shape[0]
    probs = torch.rand(n, hwa, spec.num_classes, generator=torch.Generator().manual_seed(seed)) ** 4
    batch.update(teacher_probs=probs, teacher_mask=torch.ones(n, hwa, dtype=torch.bool),
                 normalizer=float((probs.double() ** 1.8).sum()))
    return cfg, spec, batch


def _step(model, spec, batch, cfg, amp):
    """(loss terms, flat gradient) of one step_losses + backward."""
    model.zero_grad(set_to_none=True)
    losses, _ = step_losses(model, spec, batch, "cpu", loss=LossSettings.from_config(cfg),
                            distill=DistillSettings.from_config(cfg), amp=amp)
    sum(losses.values()).backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    return {k: float(v.detach()) for k, v in losses.items()}, grad


def _cache(teacher, ann, images, out, *extra):
    student_config = out.parent / "student.toml"   # the views of tiny_train_overrides
    student_config.write_text("[input]\ntrain_min_sizes = [64]\nmax_size = 128\n")
    result = CliRunner().invoke(cache_command, [
        "--teacher", str(teacher), "--annotations", str(ann), "--images", str(images),
        "--out", str(out), "--student-config", str(student_config), "--device", "cpu",
        "--shard-size", str(PRECISION_SHARDS), *extra])
    assert result.exit_code == 0, result.output
    return out


# ------------------------------------------------------------------------------ training


def test_bf16_step_matches_fp32(tmp_path):
    cfg, spec, batch = _tiny_setup(tmp_path)
    model = spec.build(pretrained=True)
    stem_outputs = []
    model.backbone.body.stem[0].register_forward_hook(lambda m, i, o: stem_outputs.append(o.dtype))
    fp32_losses, fp32_grad = _step(model, spec, batch, cfg, "off")
    bf16_losses, bf16_grad = _step(model, spec, batch, cfg, "bf16")
    assert set(bf16_losses) == {"loss_cls", "loss_box", "loss_adl"}
    for key, value in fp32_losses.items():
        assert bf16_losses[key] == pytest.approx(value, rel=BF16_LOSS_RTOL), key
    assert float((bf16_grad - fp32_grad).norm() / fp32_grad.norm()) <= BF16_GRAD_RTOL
    assert float(torch.nn.functional.cosine_similarity(bf16_grad, fp32_grad, dim=0)) >= BF16_GRAD_COSINE
    # the bf16 step really ran in bf16: its convolutions output bf16, and the numbers moved
    assert stem_outputs == [torch.float32, torch.bfloat16]
    assert not torch.equal(bf16_grad, fp32_grad)


def _linear_case():
    """A linear model, an SGD optimizer and a loss whose gradient is made infinite by a hook."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.weight.register_hook(lambda g: g * float("inf"))
    return model, optimizer, model(torch.ones(1, 3)).sum()


def test_fp16_scaler_skips_overflow_and_stops_at_the_minimum_scale(tmp_path):
    solver = SolverSettings.from_config(load_config(None, ("solver.amp=fp16",)))
    run = RunDir(tmp_path)
    # a finite gradient: the scaled step is the plain SGD step
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    reference = torch.nn.Linear(3, 1)
    reference.load_state_dict(model.state_dict())
    scaler = grad_scaler("cpu", "fp16")
    for net, amp_scaler in ((model, scaler), (reference, None)):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        update(net(torch.ones(1, 3)).sum(), net, opt, solver, amp_scaler, iteration=1, run=run)
    assert torch.equal(model.weight, reference.weight) and scaler.get_scale() == 65536.0
    # an infinite gradient: the step is skipped and the scale halved...
    model, optimizer, loss = _linear_case()
    before = model.weight.detach().clone()
    update(loss, model, optimizer, solver, scaler, iteration=2, run=run)
    assert torch.equal(model.weight, before) and scaler.get_scale() == 32768.0
    # ...until the scale is down to 1: then the gradient overflows unscaled, and training stops
    scaler.update(new_scale=1.0)
    model, optimizer, loss = _linear_case()
    with pytest.raises(UserError, match=r"iteration 7: non-finite training loss \(grad_norm=inf\)"):
        update(loss, model, optimizer, solver, scaler, iteration=7, run=run)
    assert grad_scaler("cpu", "bf16") is None and grad_scaler("cpu", "off") is None


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_train_runs_in_mixed_precision(tiny_coco, tmp_path, amp):
    ann, images = tiny_coco
    out = tmp_path / "run"
    args = ["--config", "/dev/null", "--out", str(out)]
    for item in tiny_train_overrides(ann, images, **{"solver.amp": amp, "solver.max_iter": 3}):
        args += ["--set", item]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    training = torch.load(out / "checkpoints" / "iter_0000002.pt", weights_only=True)["training"]
    assert ("loss_scale" in records[0]) == ("grad_scaler" in training) == (amp == "fp16")
    weights = torch.load(out / "model_final.pt", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())


def test_unknown_amp_mode_is_a_one_line_error(tiny_coco, tmp_path):
    ann, images = tiny_coco
    out = tmp_path / "run"
    args = ["--config", "/dev/null", "--out", str(out)]
    for item in tiny_train_overrides(ann, images, **{"solver.amp": "fp8"}):
        args += ["--set", item]
    result = CliRunner().invoke(train_command, args)
    assert_one_line_error(result, "config: solver.amp 'fp8' is unknown (known: off, bf16, fp16)")
    assert not out.exists()


# ------------------------------------------------------------------------------ teacher


def test_bf16_teacher_gives_float32_probabilities_close_to_fp32(tmp_path):
    checkpoint = make_teacher(tmp_path / "teacher.pt")
    batch = torch.randn(2, 3, 64, 96)
    fp32 = Teacher(checkpoint).logits(batch).sigmoid()
    bf16 = Teacher(checkpoint, precision="bf16").logits(batch).sigmoid()
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    torch.testing.assert_close(bf16, fp32, rtol=0, atol=BF16_PROB_ATOL)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """The same 2 images cached by the same teacher in fp32 and in bf16."""
    root = tmp_path_factory.mktemp("precision")
    teacher = make_teacher(root / "teacher.pt")
    ann, images = write_tiny_coco(root / "data", num_images=PRECISION_SHARDS)
    return {"ann": ann, "images": images, "teacher": teacher,
            "fp32": _cache(teacher, ann, images, root / "fp32"),
            "bf16": _cache(teacher, ann, images, root / "bf16", "--precision", "bf16")}


def _train_from(caches, shards, out, *overrides):
    args = ["--config", "/dev/null", "--out", str(out), "--teacher-shards", str(shards)]
    for item in tiny_train_overrides(caches["ann"], caches["images"], **{"solver.max_iter": 1}) + overrides:
        args += ["--set", item]
    return CliRunner().invoke(train_command, args)


def test_cache_records_its_teacher_precision_and_training_checks_it(caches, tmp_path):
    for precision in ("fp32", "bf16"):
        header = json.loads((caches[precision] / "manifest.json").read_text())["header"]
        assert header["teacher"]["precision"] == precision
    result = _train_from(caches, caches["bf16"], tmp_path / "refused")
    assert_one_line_error(result, f"{caches['bf16']}: teacher.precision: shards have 'bf16', training "
                                  "expects 'fp32' (distill.teacher_precision")
    assert not (tmp_path / "refused").exists()
    result = _train_from(caches, caches["fp32"], tmp_path / "refused2", "distill.teacher_precision=bf16")
    assert_one_line_error(result, "teacher.precision: shards have 'fp32', training expects 'bf16'")
    result = _train_from(caches, caches["bf16"], tmp_path / "run", "distill.teacher_precision=bf16")
    assert result.exit_code == 0, result.output


def test_live_teacher_runs_at_distill_teacher_precision(caches, tmp_path):
    teacher = caches["teacher"]
    adl = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        args = ["--config", "/dev/null", "--out", str(out), "--teacher", str(teacher)]
        for item in tiny_train_overrides(caches["ann"], caches["images"], **{
                "solver.max_iter": 1, "distill.teacher_precision": precision}):
            args += ["--set", item]
        result = CliRunner().invoke(train_command, args)
        assert result.exit_code == 0, result.output
        adl[precision] = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["loss_adl"]
    assert adl["bf16"] != adl["fp32"] and adl["bf16"] == pytest.approx(adl["fp32"], rel=BF16_LOSS_RTOL)


def test_caches_made_before_the_precision_was_recorded_ran_in_fp32():
    header = {"teacher": {"sha256": "0" * 64, "arch": "toy_student"}}
    check_teacher_precision("old", header, "fp32")
    with pytest.raises(UserError, match="old: teacher.precision: shards have 'fp32', training "
                                        "expects 'bf16'"):
        check_teacher_precision("old", header, "bf16")


def test_inference_commands_run_their_model_at_the_precision_given(tmp_path):
    """--precision reaches the network (bf16 moves the scores) and is recorded: in the
    pseudo-labels' info and in eval's metrics; fp32 is every command's and engine's default."""
    ann, images = write_tiny_coco(tmp_path / "data", num_images=2)
    checkpoint = make_tiny_checkpoint(tmp_path / "m.pt")
    scores = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"pseudo_{precision}.json"
        result = CliRunner().invoke(pseudo_label_command, [
            "--teacher", str(checkpoint), "--images", str(images), "--out", str(out), "--device", "cpu",
            "--score-thresh", "0.05", "--precision", precision, "--quiet"])
        assert result.exit_code == 0, result.output
        data = json.loads(out.read_text())
        assert data["info"]["teacher_precision"] == precision
        scores[precision] = [a["score"] for a in data["annotations"]]
        result = CliRunner().invoke(eval_command, [
            "--checkpoint", str(checkpoint), "--annotations", str(ann), "--images", str(images),
            "--out", str(tmp_path / f"eval_{precision}"), "--precision", precision, "--quiet"])
        assert result.exit_code == 0, result.output
        metrics = json.loads((tmp_path / f"eval_{precision}" / "metrics.json").read_text())
        assert metrics["inference"]["precision"] == precision
    assert scores["fp32"] and scores["bf16"] != scores["fp32"]
    engines = (pseudo_label.pseudo_label, inference.detect_dataset, cache_logits.cache_logits)
    assert {inspect.signature(f).parameters["precision"].default for f in engines} == {"fp32"}
    commands = (pseudo_label_command, eval_command, cache_command)
    assert {next(o.default for o in c.params if o.name == "precision") for c in commands} == {"fp32"}


def test_eval_precision_only_with_a_checkpoint(tmp_path):
    ann, _ = write_tiny_coco(tmp_path / "data", num_images=1)
    detections = tmp_path / "detections.json"
    detections.write_text("[]")
    result = CliRunner().invoke(eval_command, ["--detections", str(detections), "--annotations", str(ann),
                                               "--out", str(tmp_path / "eval"), "--precision", "bf16"])
    assert result.exit_code == 2 and "--precision: only used with --checkpoint" in result.output


# ------------------------------------------------------------------------------ pinned memory


def test_loaders_pin_batches_for_a_cuda_device(caches):
    cfg = load_config(None, tiny_train_overrides(caches["ann"], caches["images"]))
    spec = model_spec_from_config(cfg, read_coco_json(caches["ann"])["categories"])
    for pin in (True, False):
        assert coco_loader(caches["ann"], caches["images"], spec, cfg, DistInfo(), start_batch=0,
                           pin_memory=pin).pin_memory is pin
        loader = shard_loader(caches["fp32"], spec, cfg, DistInfo(), start_batch=0, pin_memory=pin)
        # decoded in this process: the teacher scores go straight into pinned buffers
        assert loader.pin_memory is pin and loader.dataset.pin is pin
    cfg["data"]["num_workers"] = 1   # decoded in a worker: the loader pins what it hands over
    loader = shard_loader(caches["fp32"], spec, cfg, DistInfo(), start_batch=0, pin_memory=True)
    assert loader.pin_memory is True and loader.dataset.pin is False


def test_place_views_is_to_batch_layout_for_a_batch():
    layout = AnchorLayout(size_factor=1.0)
    sizes = [(64, 96), (96, 64)]
    views = [torch.rand(layout.anchors(size).shape[0], 3) for size in sizes]
    recipes = [{"padded_size": list(size)} for size in sizes]
    probs, masks = place_views(views, recipes, layout, (96, 96))
    for i, size in enumerate(sizes):
        want_probs, want_mask = to_batch_layout(views[i], layout, size, (96, 96))
        assert torch.equal(probs[i], want_probs) and torch.equal(masks[i], want_mask)
    if torch.cuda.is_available():
        assert place_views(views, recipes, layout, (96, 96), pin=True)[0].is_pinned()
    else:   # pinned memory is asked for: without a CUDA driver torch refuses it
        with pytest.raises(RuntimeError):
            place_views(views, recipes, layout, (96, 96), pin=True)
