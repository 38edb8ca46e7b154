"""Detectron's RetinaNet, written for the tests from its formulas (Detectron's
``modeling/ResNet.py``, ``FPN.py``, ``retinanet_heads.py``, ``generate_anchors.py``,
``core/test_retinanet.py``, ``utils/boxes.py``, ``utils/blob.py``) with numpy and torch
primitives only — no sadpipe code — plus synthetic weight files in the release's format.

One deliberate difference from Detectron: the resize is bilinear to the rounded output size
with half-pixel centres (torch's), where Detectron samples with OpenCV at the exact scale.
"""
from __future__ import annotations

import pickle

import numpy as np
import torch
import torch.nn.functional as F

PIXEL_MEANS_BGR = np.array([102.9801, 115.9465, 122.7717], dtype=np.float32)
ASPECT_RATIOS = (1.0, 2.0, 0.5)
SCALES_PER_OCTAVE = 3
ANCHOR_SCALE = 4
LEVELS = (3, 4, 5, 6, 7)
NUM_ANCHORS = 9
NUM_CLASSES = 80
FPN_DIM = 256
# The 80 COCO category ids in increasing order (instances_*2017.json).
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
INFERENCE_TH, PRE_NMS_TOP_N, NMS_TH, DETECTIONS_PER_IM = 0.05, 1000, 0.5, 100
XFORM_CLIP = np.log(1000.0 / 16.0)


# ---------------------------------------------------------------- synthetic weight files

def body_widths(stage: int, groups: int, width_per_group: int) -> tuple[int, int]:
    """(bottleneck inner width, output width) of res{stage}."""
    return groups * width_per_group * 2 ** (stage - 2), 256 * 2 ** (stage - 2)


def synthetic_blobs(depths, *, groups=1, width_per_group=64, seed=0,
                    cls_bias=-2.5) -> dict[str, np.ndarray]:
    """A RetinaNet's blobs as Detectron names them, random but with tame activations; the
    class prior ``cls_bias`` sets how many scores pass 0.05 (-2.5: most)."""
    rng = np.random.default_rng(seed)
    blobs = {}

    def conv(name, c_out, c_in, k, *, bias=True, gain=1.0):
        fan_in = c_in * k * k
        blobs[f"{name}_w"] = (rng.standard_normal((c_out, c_in, k, k)) * gain
                              * np.sqrt(2.0 / fan_in)).astype(np.float32)
        if bias:
            blobs[f"{name}_b"] = (0.1 * rng.standard_normal(c_out)).astype(np.float32)

    def affine(name, c, scale=(0.5, 1.0)):
        blobs[f"{name}_s"] = rng.uniform(*scale, c).astype(np.float32)
        blobs[f"{name}_b"] = (0.1 * rng.standard_normal(c)).astype(np.float32)

    conv("conv1", 64, 3, 7, bias=False, gain=0.02)
    affine("res_conv1_bn", 64)
    c_in = 64
    for stage, blocks in zip((2, 3, 4, 5), depths):
        inner, out = body_widths(stage, groups, width_per_group)
        for j in range(blocks):
            name = f"res{stage}_{j}"
            conv(f"{name}_branch2a", inner, c_in, 1, bias=False)
            affine(f"{name}_branch2a_bn", inner)
            conv(f"{name}_branch2b", inner, inner // groups, 3, bias=False)
            affine(f"{name}_branch2b_bn", inner)
            conv(f"{name}_branch2c", out, inner, 1, bias=False)
            affine(f"{name}_branch2c_bn", out, scale=(0.1, 0.3))
            if j == 0:
                conv(f"{name}_branch1", out, c_in, 1, bias=False)
                affine(f"{name}_branch1_bn", out)
            c_in = out
    last = {stage: f"res{stage}_{blocks - 1}_sum" for stage, blocks in zip((2, 3, 4, 5), depths)}
    conv(f"fpn_inner_{last[5]}", FPN_DIM, 2048, 1)
    conv(f"fpn_inner_{last[4]}_lateral", FPN_DIM, 1024, 1)
    conv(f"fpn_inner_{last[3]}_lateral", FPN_DIM, 512, 1)
    for stage in (5, 4, 3):
        conv(f"fpn_{last[stage]}", FPN_DIM, FPN_DIM, 3)
    conv("fpn_6", FPN_DIM, 2048, 3)
    conv("fpn_7", FPN_DIM, FPN_DIM, 3)
    for kind in ("cls", "bbox"):
        for i in range(4):
            conv(f"retnet_{kind}_conv_n{i}_fpn3", FPN_DIM, FPN_DIM, 3, gain=0.7)
    conv("retnet_cls_pred_fpn3", NUM_ANCHORS * NUM_CLASSES, FPN_DIM, 3, gain=0.3)
    blobs["retnet_cls_pred_fpn3_b"] = np.full(NUM_ANCHORS * NUM_CLASSES, cls_bias, np.float32)
    conv("retnet_bbox_pred_fpn3", NUM_ANCHORS * 4, FPN_DIM, 3, gain=0.05)
    return blobs


def with_release_extras(blobs: dict, seed=1) -> dict:
    """What a release file holds besides the detector: momentum, ImageNet leftovers (fc1000,
    zero conv biases) and, in the fork's students, the teacher's blobs."""
    rng = np.random.default_rng(seed)
    out = dict(blobs)
    for name in list(blobs)[:5]:
        out[f"{name}_momentum"] = np.zeros_like(blobs[name])
    out["fc1000_w"] = rng.standard_normal((1000, 2048)).astype(np.float32)
    out["fc1000_b"] = np.zeros(1000, np.float32)
    out["res2_0_branch2a_b"] = np.zeros(64, np.float32)
    out["teacher/conv1_w"] = blobs["conv1_w"].copy()
    out["teacher/retnet_cls_pred_fpn3_b"] = blobs["retnet_cls_pred_fpn3_b"].copy()
    return out


class Python2Pickler(pickle._Pickler):
    """Pickles as Python 2's pickle with protocol 2: text and bytes as ``str`` (BINSTRING),
    numpy globals under ``numpy.core`` (numpy 1.x)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + len(data).to_bytes(4, "little") + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode("ascii"))
        self.memoize(obj)


def write_python2_pickle(path, blobs: dict, *, wrapped=True) -> None:
    """Write ``{"blobs": blobs, "cfg": yaml}`` (or the bare dict) as Python 2 did."""
    obj = {"blobs": blobs, "cfg": "MODEL:\n  TYPE: retinanet\n"} if wrapped else blobs
    with open(path, "wb") as f:
        Python2Pickler(f, protocol=2).dump(obj)


# ---------------------------------------------------------------- network

def _t(blobs, name):
    return torch.from_numpy(np.ascontiguousarray(blobs[name], dtype=np.float32))


def _conv(x, blobs, name, *, stride=1, padding=0, groups=1, bias=True):
    b = _t(blobs, f"{name}_b") if bias else None
    return F.conv2d(x, _t(blobs, f"{name}_w"), b, stride=stride, padding=padding, groups=groups)


def _affine(x, blobs, name):
    return x * _t(blobs, f"{name}_s").view(1, -1, 1, 1) + _t(blobs, f"{name}_b").view(1, -1, 1, 1)


def forward(blobs, x: torch.Tensor, depths, *, stride_1x1=True, groups=1):
    """Dense outputs per level P3..P7: cls_prob (N, A, K, H, W), box_pred (N, A, 4, H, W)."""
    y = _conv(x, blobs, "conv1", stride=2, padding=3, bias=False)
    y = F.max_pool2d(F.relu(_affine(y, blobs, "res_conv1_bn")), 3, stride=2, padding=1)
    c = {}
    for stage, blocks in zip((2, 3, 4, 5), depths):
        for j in range(blocks):
            y = _bottleneck(y, blobs, f"res{stage}_{j}", 2 if (j == 0 and stage > 2) else 1,
                            stride_1x1=stride_1x1, groups=groups, project=j == 0)
        c[stage] = y
    last = {stage: f"res{stage}_{blocks - 1}_sum" for stage, blocks in zip((2, 3, 4, 5), depths)}
    inner5 = _conv(c[5], blobs, f"fpn_inner_{last[5]}")
    inner4 = _conv(c[4], blobs, f"fpn_inner_{last[4]}_lateral") + F.interpolate(inner5, scale_factor=2.0)
    inner3 = _conv(c[3], blobs, f"fpn_inner_{last[3]}_lateral") + F.interpolate(inner4, scale_factor=2.0)
    p6 = _conv(c[5], blobs, "fpn_6", stride=2, padding=1)
    levels = [_conv(inner3, blobs, f"fpn_{last[3]}", padding=1),
              _conv(inner4, blobs, f"fpn_{last[4]}", padding=1),
              _conv(inner5, blobs, f"fpn_{last[5]}", padding=1),
              p6, _conv(F.relu(p6), blobs, "fpn_7", stride=2, padding=1)]
    return [_head(p, blobs) for p in levels]


def _bottleneck(x, blobs, name, stride, *, stride_1x1, groups, project):
    s1, s3 = (stride, 1) if stride_1x1 else (1, stride)
    y = F.relu(_affine(_conv(x, blobs, f"{name}_branch2a", stride=s1, bias=False), blobs,
                       f"{name}_branch2a_bn"))
    y = F.relu(_affine(_conv(y, blobs, f"{name}_branch2b", stride=s3, padding=1, groups=groups,
                             bias=False), blobs, f"{name}_branch2b_bn"))
    y = _affine(_conv(y, blobs, f"{name}_branch2c", bias=False), blobs, f"{name}_branch2c_bn")
    shortcut = x
    if project:
        shortcut = _affine(_conv(x, blobs, f"{name}_branch1", stride=stride, bias=False), blobs,
                           f"{name}_branch1_bn")
    return F.relu(y + shortcut)


def _head(p, blobs):
    n, _, h, w = p.shape
    cls, box = p, p
    for i in range(4):
        cls = F.relu(_conv(cls, blobs, f"retnet_cls_conv_n{i}_fpn3", padding=1))
        box = F.relu(_conv(box, blobs, f"retnet_bbox_conv_n{i}_fpn3", padding=1))
    cls = torch.sigmoid(_conv(cls, blobs, "retnet_cls_pred_fpn3", padding=1))
    box = _conv(box, blobs, "retnet_bbox_pred_fpn3", padding=1)
    return cls.view(n, NUM_ANCHORS, NUM_CLASSES, h, w), box.view(n, NUM_ANCHORS, 4, h, w)


# ---------------------------------------------------------------- anchors (generate_anchors)

def cell_anchors(stride: int) -> np.ndarray:
    """(A, 4) float64: octave-major, legacy pixel boxes."""
    rows = []
    for octave in range(SCALES_PER_OCTAVE):
        size = stride * 2 ** (octave / float(SCALES_PER_OCTAVE)) * ANCHOR_SCALE
        for ratio in ASPECT_RATIOS:
            rows.append(_one_anchor(float(stride), size, ratio))
    return np.array(rows)


def _one_anchor(stride: float, size: float, ratio: float) -> list[float]:
    base = np.array([0.0, 0.0, stride - 1, stride - 1])
    w, h = base[2] - base[0] + 1, base[3] - base[1] + 1
    cx, cy = base[0] + 0.5 * (w - 1), base[1] + 0.5 * (h - 1)
    ws = np.round(np.sqrt(w * h / ratio))     # whole pixels, numpy rounds half to even
    hs = np.round(ws * ratio)
    scale = size / stride
    ws, hs = ws * scale, hs * scale
    return [cx - 0.5 * (ws - 1), cy - 0.5 * (hs - 1), cx + 0.5 * (ws - 1), cy + 0.5 * (hs - 1)]


# ---------------------------------------------------------------- input and inference

def image_scale(height, width, target_size, max_size) -> float:
    """utils/blob.py: short side to target, unless the long side would pass max_size."""
    scale = float(target_size) / min(height, width)
    if np.round(scale * max(height, width)) > max_size:
        scale = float(max_size) / max(height, width)
    return scale


def bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(H, W, C) float32 → (out_h, out_w, C), half-pixel centres, edge samples clamped."""
    def taps(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, fy = taps(image.shape[0], out_h)
    x0, x1, fx = taps(image.shape[1], out_w)
    top = image[y0][:, x0] * (1 - fx)[None, :, None] + image[y0][:, x1] * fx[None, :, None]
    bottom = image[y1][:, x0] * (1 - fx)[None, :, None] + image[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def input_blob(image_rgb: np.ndarray, target_size: int, max_size: int, coarsest=128):
    """(1, 3, H, W) BGR minus pixel means, resized and zero-padded; and the scale."""
    h, w = image_rgb.shape[:2]
    scale = image_scale(h, w, target_size, max_size)
    im = image_rgb[:, :, ::-1].astype(np.float32) - PIXEL_MEANS_BGR
    im = bilinear(im, int(round(h * scale)), int(round(w * scale)))
    ph, pw = (int(np.ceil(s / coarsest) * coarsest) for s in im.shape[:2])
    blob = np.zeros((1, 3, ph, pw), np.float32)
    blob[0, :, :im.shape[0], :im.shape[1]] = im.transpose(2, 0, 1)
    return blob, scale


def bbox_transform(boxes, deltas):
    w = boxes[:, 2] - boxes[:, 0] + 1.0
    h = boxes[:, 3] - boxes[:, 1] + 1.0
    cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
    dw = np.minimum(deltas[:, 2], XFORM_CLIP)
    dh = np.minimum(deltas[:, 3], XFORM_CLIP)
    pcx, pcy = deltas[:, 0] * w + cx, deltas[:, 1] * h + cy
    pw, ph = np.exp(dw) * w, np.exp(dh) * h
    return np.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw - 1, pcy + 0.5 * ph - 1], 1)


def greedy_nms(dets: np.ndarray, thresh: float) -> list[int]:
    """Classic greedy NMS, "+1" areas, suppressing IoU >= thresh (cython_nms)."""
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(dets), bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(int(i))
        for j in order[pos + 1:]:
            if suppressed[j]:
                continue
            iw = max(np.float32(0.0), min(x2[i], x2[j]) - max(x1[i], x1[j]) + 1)
            ih = max(np.float32(0.0), min(y2[i], y2[j]) - max(y1[i], y1[j]) + 1)
            inter = iw * ih
            if inter / (areas[i] + areas[j] - inter) >= thresh:
                suppressed[j] = True
    return keep


def detect(outputs, scale: float, image_hw) -> np.ndarray:
    """im_detect_bbox + class-wise NMS: (D, 6) rows [x1, y1, x2, y2, score, class index]."""
    per_class = {}
    h_img, w_img = image_hw
    for lvl, (cls_prob, box_pred) in zip(LEVELS, outputs):
        cls_prob, box_pred = cls_prob[0].numpy(), box_pred[0].numpy()
        flat = cls_prob.ravel()
        th = INFERENCE_TH if lvl < LEVELS[-1] else 0.0
        candidates = np.where(flat > th)[0]
        if len(candidates) == 0:
            continue
        top = candidates[np.argsort(-flat[candidates], kind="stable")[:PRE_NMS_TOP_N]]
        a, k, y, x = np.unravel_index(top, cls_prob.shape)
        stride = 2 ** lvl
        anchors = (np.stack([x, y, x, y], 1) * stride + cell_anchors(stride)[a]).astype(np.float32)
        boxes = bbox_transform(anchors, box_pred[a, :, y, x]).astype(np.float32)
        boxes /= np.float32(scale)
        boxes[:, 0::2] = np.maximum(np.minimum(boxes[:, 0::2], w_img - 1), 0)
        boxes[:, 1::2] = np.maximum(np.minimum(boxes[:, 1::2], h_img - 1), 0)
        for row, cls in zip(np.column_stack([boxes, flat[top]]), k):
            per_class.setdefault(int(cls), []).append(row)
    detections = []
    for cls, rows in per_class.items():
        dets = np.array(rows, np.float32)
        for i in greedy_nms(dets, NMS_TH):
            detections.append([*dets[i], cls])
    detections = np.array(detections, np.float64).reshape(-1, 6)
    return detections[np.argsort(-detections[:, 4], kind="stable")[:DETECTIONS_PER_IM]]


def coco_results(image_id: int, detections: np.ndarray) -> list[dict]:
    """json_dataset_evaluator: bbox [x1, y1, x2 - x1 + 1, y2 - y1 + 1], class → COCO id."""
    return [{"image_id": image_id, "category_id": COCO_IDS[int(c)],
             "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1], "score": s}
            for x1, y1, x2, y2, s, c in detections.tolist()]
