"""The teacher at training scale: dense class probabilities for exactly the student's views.

Used offline by ``cache-logits`` (each view on its own padded grid) and online by
``train --teacher`` (a whole student batch, or, on batches read from shards, each view on its
own padded grid again: the cache's scores without the codec).
"""
from __future__ import annotations

import torch

from sadpipe.checkpoint import ModelSpec, load_model
from sadpipe.data.categories import same_ids
from sadpipe.data.transforms import Preprocessing, make_view, renormalize
from sadpipe.errors import UserError
from sadpipe.modeling.distill import to_batch_layout, view_anchor_mask


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
        view_prep: the preprocessing that defines the views (the student's sizes); the
            teacher still normalises pixels with its own mean/std.
    """

    def __init__(self, checkpoint, *, device: str = "cpu"):
        self.model, self.spec = load_model(checkpoint, device=device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = device

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
        logits, _ = self.model(batch.to(self.device))
        return torch.sigmoid(logits.float())

    @torch.no_grad()
    def batch_probs(self, images: torch.Tensor, recipes: list[dict], student_prep: Preprocessing):
        """Probabilities (N, HWA, C) for a padded student batch, and (N, HWA) masks of the
        anchors on each view's own grid. ``images`` are normalised as the student's input;
        the teacher gets its own normalisation (channel order, range, mean/std), zero padding
        outside each view."""
        x = self._renormalize(images, recipes, student_prep)
        logits, _ = self.model(x.to(self.device))
        probs = torch.sigmoid(logits.float())
        layout = self.spec.anchor_layout
        masks = [view_anchor_mask(layout, tuple(r["padded_size"]), tuple(images.shape[-2:]))
                 for r in recipes]
        return probs, torch.stack(masks)

    @torch.no_grad()
    def cached_views_probs(self, images: torch.Tensor, recipes: list[dict], student_prep: Preprocessing):
        """As :meth:`batch_probs`, but each view runs alone on its own padded grid, as
        ``cache-logits`` runs it, then is placed on the batch grid: the scores a cache of these
        views holds, before encoding. images: (N, 3, H, W) student batch."""
        batch_hw = tuple(images.shape[-2:])
        probs, masks = [], []
        for i, recipe in enumerate(recipes):
            h, w = recipe["padded_size"]
            view_probs, _ = self.batch_probs(images[i:i + 1, :, :h, :w], [recipe], student_prep)
            placed, mask = to_batch_layout(view_probs[0], self.spec.anchor_layout, (h, w), batch_hw)
            probs.append(placed)
            masks.append(mask)
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
