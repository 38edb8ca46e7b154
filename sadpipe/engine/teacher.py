"""The teacher at training scale: dense class probabilities for exactly the student's views.

**The teacher's view context**, one definition for both paths: the teacher scores each view
alone, on the view's own padded grid (its size rounded up to ``size_divisibility``), never
inside a student batch whose padding depends on which images were drawn with it. Offline,
``cache-logits`` stores exactly that (``views_probs``); online, ``train --teacher`` computes
exactly that for every view of the student's batch and places it on the batch grid
(``batch_view_probs``), so a student distilled from the cache and one distilled from the live
teacher get the same targets up to the codec. Measured on the zoo teacher (issue 15): the
padded-batch context moved the normaliser by -2 % to +12 % and edge scores by up to 0.40
against the view context, and a batch's own make-up decided which.
"""
from __future__ import annotations

import torch

from cuda_ops.constants import FP32
from sadpipe.checkpoint import load_model
from sadpipe.data.categories import same_ids
from sadpipe.data.transforms import Preprocessing, make_view, renormalize
from sadpipe.engine.precision import autocast
from sadpipe.errors import UserError
from sadpipe.modeling.distill import to_batch_layout
from sadpipe.modeling.spec import ModelSpec


def check_teacher_compatible(teacher: ModelSpec, student: ModelSpec, *, source) -> None:
    """Per-anchor distillation needs the same classes and the same anchors."""
    if not same_ids(teacher.category_ids, student.category_ids):
        raise UserError(f"{source}: teacher classes (ids {teacher.category_ids[:8]}...) differ from "
                        f"the student's (ids {student.category_ids[:8]}...)")
    if teacher.anchor_layout != student.anchor_layout:
        raise UserError(f"{source}: teacher anchor layout {teacher.anchor_layout.to_dict()} differs "
                        f"from the student's {student.anchor_layout.to_dict()}; per-anchor "
                        "distillation needs the same anchors")


class Teacher:
    """A frozen teacher producing sigmoid class probabilities.

    Args:
        checkpoint: sadpipe checkpoint of the teacher.
        device: where it runs.
        precision: of its forward pass, fp32 | bf16 | fp16 (:mod:`sadpipe.engine.precision`);
            the probabilities are float32 whatever it is.
    """

    def __init__(self, checkpoint, *, device: str = "cpu", precision: str = FP32):
        self.model, self.spec = load_model(checkpoint, device=device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device, self.precision = device, precision

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Class logits (N, HWA, C) float32 of a padded batch, the network at ``precision``."""
        with autocast(self.device, self.precision):
            logits, _ = self.model(batch.to(self.device))
        return logits.float()

    @torch.no_grad()
    def views_probs(self, images, recipes: list[dict], view_prep: Preprocessing) -> torch.Tensor:
        """Probabilities (N, HWA_view, C) for N views that share one padded size, each on
        that (its own) padded grid. images: RGB uint8 (H, W, 3) originals."""
        prep = self._teacher_prep(view_prep)
        ph, pw = recipes[0]["padded_size"]
        batch = torch.zeros(len(images), 3, ph, pw)
        for i, (image, recipe) in enumerate(zip(images, recipes)):
            if tuple(recipe["padded_size"]) != (ph, pw):
                raise ValueError("views of one teacher batch must share their padded size")
            x = make_view(image, recipe, prep)
            batch[i, :, : x.shape[1], : x.shape[2]] = x
        return torch.sigmoid(self.logits(batch))

    @torch.no_grad()
    def batch_view_probs(self, images: torch.Tensor, recipes: list[dict], student_prep: Preprocessing):
        """Probabilities (N, HWA, C) on the batch grid and (N, HWA) masks of the anchors on each
        view's own grid, each view scored alone on its own padded grid (the module's view
        context; views of one padded size run as one teacher batch). ``images``: (N, 3, H, W)
        the student's padded batch, normalised as the student's input; the teacher gets its
        own normalisation (channel order, range, mean/std)."""
        batch_hw = tuple(images.shape[-2:])
        x = self._renormalize(images, recipes, student_prep)
        probs, masks = [None] * len(recipes), [None] * len(recipes)
        for size in sorted({tuple(r["padded_size"]) for r in recipes}):
            idx = [i for i, r in enumerate(recipes) if tuple(r["padded_size"]) == size]
            h, w = size
            for i, view in zip(idx, torch.sigmoid(self.logits(x[idx, :, :h, :w]))):
                probs[i], masks[i] = to_batch_layout(view, self.spec.anchor_layout, size, batch_hw)
        return torch.stack(probs), torch.stack(masks)

    def _teacher_prep(self, view_prep: Preprocessing) -> Preprocessing:
        return self.spec.preprocessing.with_sizes_of(view_prep)

    def _renormalize(self, images: torch.Tensor, recipes: list[dict], prep: Preprocessing) -> torch.Tensor:
        t = self.spec.preprocessing
        if t.same_normalization(prep):
            return images
        out = renormalize(images, prep, t)
        for i, r in enumerate(recipes):
            h, w = r["resized_size"]
            out[i, :, h:, :] = 0
            out[i, :, :, w:] = 0
        return out
