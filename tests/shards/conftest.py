"""Small shard directories for the shards tests: tiny views so writing and reading are fast."""
import io

import numpy as np
import pytest
from PIL import Image

from shards import ShardWriter, SparseCodec, merge_manifests, teacher_like_scores

LEVEL_SIZES = [72, 18, 9]  # (4x2, 2x1, 1x1 cells) x 9 anchors
NUM_CLASSES = 3
VIEWS = ("orig", "hflip")
HEADER = {"teacher": {"sha256": "a" * 64, "arch": "retinanet_r50"},
          "anchor_layout": {"sizes": [32, 64, 128], "aspect_ratios": [0.5, 1.0, 2.0]},
          "preprocessing": {"min_size": 64, "max_size": 96, "mean": [0.485, 0.456, 0.406]},
          "views": list(VIEWS)}
CODEC = SparseCodec(threshold=0.01)


def image_bytes(i):
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), (i % 256, 7, 9)).save(buf, format="PNG")
    return buf.getvalue()


def view_probs(key, view):
    """Deterministic teacher-like scores of one view of one image."""
    seed = [int(key[1:]), VIEWS.index(view)]
    return teacher_like_scores(sum(LEVEL_SIZES), NUM_CLASSES, level_sizes=LEVEL_SIZES,
                               rng=np.random.default_rng(seed), objects_per_view=(1, 2))


def target_of(key):
    return {"boxes": [[1.0, 2.0, 3.0, 4.0]], "category_ids": [int(key[1:]) % 3]}


def is_unreadable(key):
    return key.endswith("7")  # these images are "unreadable": skipped and listed


def write_rank(out_dir, keys, *, rank=0, header=HEADER, shard_size=3, overwrite=False,
               stop_after=None):
    """Write one rank's shards like the cache-logits command does; stop_after=n stops after
    n shards (leaves the run unfinished)."""
    writer = ShardWriter(out_dir, header=header, codec=CODEC, shard_size=shard_size, rank=rank,
                         overwrite=overwrite)
    written = 0
    for plan in writer.plan(keys):
        if plan.done:
            continue
        if stop_after is not None and written == stop_after:
            return writer
        with writer.open_shard(plan) as shard:
            for key in plan.keys:
                if is_unreadable(key):
                    shard.skip(key, "cannot identify image file")
                    continue
                shard.write(key, image_bytes=image_bytes(int(key[1:])), image_ext="png",
                            target=target_of(key),
                            views=[dict(name=v, recipe={"flip": v == "hflip", "scale": 1.5},
                                        probs=view_probs(key, v), level_sizes=LEVEL_SIZES)
                                   for v in VIEWS])
        written += 1
    writer.finish()
    return writer


def make_keys(n):
    return [f"k{i:04d}" for i in range(n)]


def build(out_dir, keys, *, world_size=1, **kwargs):
    """Write keys split over ``world_size`` ranks (contiguous blocks) and merge."""
    per_rank = -(-len(keys) // world_size)
    for rank in range(world_size):
        write_rank(out_dir, keys[rank * per_rank:(rank + 1) * per_rank], rank=rank, **kwargs)
    return merge_manifests(out_dir, world_size, command="test build")


@pytest.fixture
def shard_dir(tmp_path):
    """10 images (one skipped) over 2 ranks, shards of 3."""
    out = tmp_path / "shards"
    build(out, make_keys(10), world_size=2)
    return out
