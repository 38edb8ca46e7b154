"""The report's gallery (``WORKDIR/gallery.png``): what the models and the pseudo-labels look
like on a few images.

One row per validation image drawn by all three eval stages (``sadpipe eval --draw N`` with
the same seed picks the same images for each model), one column per model (teacher,
baseline student, distilled student); then a row of unlabeled images with the teacher's
pseudo-labels (``sadpipe pseudo-label --draw N``, the ``[report] pseudo_labels`` stage).
The pictures are the ``drawings/`` folders next to those stages' outputs; a pipeline whose
stages drew nothing (or a workdir from before ``--draw``) has no gallery.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from sadpipe.errors import UserError
from sadpipe.evaluation.draw import MAX_LONG_SIDE, PICTURE_SUFFIX, grid
from sadpipe.evaluation.pictures import DRAWINGS_DIR
from sadpipe.fileio import atomic_path
from sadpipe.pipeline.report_spec import PSEUDO_OUTPUT, ROLES
from sadpipe.pipeline.spec import Pipeline

GALLERY_PNG = "gallery.png"
GALLERY_ROWS = 3             # validation images shown
GALLERY_CELL = MAX_LONG_SIDE   # column width: small images' pictures fit unshrunk
PSEUDO_ROW_TITLE = "pseudo-labels (teacher)"


def find_pictures(pipeline: Pipeline) -> dict | None:
    """The pictures the gallery shows, or None when there are none.

    Returns ``{"val": [{"image": file name, role: path, ...}] (up to GALLERY_ROWS images
    that every eval stage drew), "pseudo_labels": [path] (up to one per model column)}``.
    """
    spec = pipeline.report
    folders = {role: pipeline.stage(entry.eval_stage).outputs["metrics"].parent / DRAWINGS_DIR
               for role, entry in spec.models.items()}
    common = set.intersection(*(set(_pictures_in(folder)) for folder in folders.values()))
    val = [{"image": name, **{role: folders[role] / name for role in ROLES}}
           for name in sorted(common)[:GALLERY_ROWS]]
    pseudo = []
    if spec.pseudo_labels is not None:
        labels = pipeline.stage(spec.pseudo_labels).outputs[PSEUDO_OUTPUT]
        folder = labels.parent / DRAWINGS_DIR
        pseudo = [folder / name for name in _pictures_in(folder)[:len(ROLES)]]
    if not val and not pseudo:
        return None
    return {"val": val, "pseudo_labels": pseudo}


def write_gallery(pictures: dict, path: Path, column_titles: list[str]) -> None:
    """Draw the gallery of :func:`find_pictures` as one PNG (written atomically)."""
    cells, row_titles = [], []
    for row in pictures["val"]:
        cells.append([_open(row[role]) for role in ROLES])
        row_titles.append(f"val image {Path(row['image']).stem.lstrip('0') or '0'}")
    if pictures["pseudo_labels"]:
        cells.append([_open(p) for p in pictures["pseudo_labels"]])
        row_titles.append(PSEUDO_ROW_TITLE)
    sheet = grid(cells, column_titles=column_titles, row_titles=row_titles,
                 cell_size=GALLERY_CELL)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)


def _pictures_in(folder: Path) -> list[str]:
    """The sorted picture file names in ``folder`` (none when it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix == PICTURE_SUFFIX)


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        raise UserError(f"{path}: cannot read this picture; run its stage again "
                        "(sadpipe run --from STAGE)") from None
