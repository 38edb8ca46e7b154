"""The one rule between a detector's class indices and COCO category ids.

**Class c is the (c+1)-th category id in increasing order** — the release's rule
(Detectron maps the sorted category ids to contiguous classes). COCO promises no order for a
file's ``categories`` list, so sadpipe never uses the order a file lists them in: datasets,
model specs, checkpoints, shard headers and pseudo-label files all hold their categories in
this order, and two files that list the same categories in different orders are
interchangeable. Everything that maps one to the other goes through this module.
"""
from __future__ import annotations

from collections.abc import Iterable

Category = tuple[int, str]   # (COCO category id, name)


def class_order(categories: Iterable) -> tuple[Category, ...]:
    """``categories`` — ``{"id", "name"}`` dicts or ``(id, name)`` pairs, in any order — as
    ``(id, name)`` pairs in class-index order (by id): entry c is class c."""
    pairs = [(int(c["id"]), str(c["name"])) if isinstance(c, dict) else (int(c[0]), str(c[1]))
             for c in categories]
    return tuple(sorted(pairs))


def in_class_order(categories: Iterable[Category]) -> bool:
    """True when ``(id, name)`` pairs already follow the rule (strictly increasing ids)."""
    ids = [cid for cid, _ in categories]
    return all(a < b for a, b in zip(ids, ids[1:]))


def class_index_of(category_ids: Iterable[int]) -> dict[int, int]:
    """{category id: class index} for a set of ids given in any order."""
    return {cid: c for c, cid in enumerate(sorted(category_ids))}


def same_ids(a: Iterable[int], b: Iterable[int]) -> bool:
    """Two lists of category ids name the same categories (in whatever order)."""
    return sorted(a) == sorted(b)


def class_permutation(categories: Iterable[Category]) -> list[int]:
    """For ``(id, name)`` pairs in some stored order: ``perm`` with ``perm[c]`` = the stored
    position of class c, so ``[stored[p] for p in perm]`` is in class-index order."""
    stored = list(categories)
    return sorted(range(len(stored)), key=lambda i: stored[i][0])


def as_dicts(categories: Iterable[Category]) -> list[dict]:
    """``(id, name)`` pairs as COCO ``[{"id", "name"}]`` entries, in class-index order."""
    return [{"id": cid, "name": name} for cid, name in class_order(categories)]
