"""`sadpipe export-detectron`: hand a sadpipe model of the Detectron variant back to Detectron."""
import click


@click.command(name="export-detectron")
@click.argument("checkpoint_path", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Detectron weight file (.pkl) to write.")
def command(checkpoint_path, out_path):
    """Write the weights of a sadpipe checkpoint of the Detectron variant as a Detectron
    (Caffe2) weight file: {"blobs": {name: float32 array}}, pickle protocol 2 as Python 2
    writes it, so the original SAD code can load it (with its own RetinaNet config for the
    architecture; no cfg is stored).

    The checkpoint must be Detectron's variant — one made by `sadpipe import-detectron`, or
    trained from one with the same model settings (model.norm = "affine", model.stride_in_1x1,
    model.p6_from = "c5", the release's anchors and box convention, BGR input in [0, 255]
    minus the pixel means). Importing a release file and exporting it gives the same blobs,
    byte for byte.

    \b
    Example:
      sadpipe export-detectron runs/r50_sad/model_final.pt --out r50_sad.pkl
    """
    from sadpipe.checkpoint import load_checkpoint
    from sadpipe.convert.detectron_import import export_blobs
    from sadpipe.convert.detectron_pickle import save_blobs
    from sadpipe.modeling.spec import ModelSpec

    payload = load_checkpoint(checkpoint_path)
    spec = ModelSpec.from_dict(payload["model"])
    blobs = export_blobs(spec, payload["state_dict"], source=checkpoint_path)
    save_blobs(out_path, blobs)
    click.echo(f"wrote {out_path}: {len(blobs)} blobs of a {spec.arch} RetinaNet "
               f"({spec.num_classes} classes)")
