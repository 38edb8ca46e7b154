"""`sadpipe import-torchvision`: use torchvision's COCO RetinaNet as a teacher."""
import click

from sadpipe.errors import UserError


@click.command(name="import-torchvision")
@click.argument("state_dict_path", type=click.Path(dir_okay=False))
@click.option("--arch", type=click.Choice(["resnet50"]), default="resnet50", show_default=True,
              help="torchvision model the weights belong to (retinanet_resnet50_fpn).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="sadpipe checkpoint to write.")
@click.option("--min-size", default=800, show_default=True, help="Test-time short side.")
@click.option("--max-size", default=1333, show_default=True, help="Test-time long-side cap.")
def command(state_dict_path, arch, out_path, min_size, max_size):
    """Convert a torchvision retinanet_resnet50_fpn state dict (COCO, 91-id label space)
    into a self-describing sadpipe checkpoint with the 80 COCO categories.

    \b
    Example:
      python -c "import torch, torchvision as tv; torch.save(tv.models.detection.\\
    retinanet_resnet50_fpn(weights='COCO_V1').state_dict(), 'tv_r50.pth')"
      sadpipe import-torchvision tv_r50.pth --out teacher_r50.pt

    The converted model gives the same class scores and boxes as torchvision's for every
    real COCO category. To start a teacher for other classes from it, train with
    model.init = OUT and model.init_reset_classes = true (a fresh class layer; README, "A
    teacher for your classes"), e.g. `sadpipe run custom_sad_gpu --set vars.teacher_init=OUT`.
    """
    import torch

    from sadpipe.checkpoint import save_checkpoint
    from sadpipe.convert.torchvision_import import import_retinanet_resnet50

    try:
        state = torch.load(state_dict_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{state_dict_path}: file not found") from None
    except Exception as err:  # noqa: BLE001 - an unreadable file is a user error
        raise UserError(f"{state_dict_path}: not a readable torch state dict "
                        f"({type(err).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and "format" in state:
        raise UserError(f"{state_dict_path}: already a sadpipe checkpoint")
    if not isinstance(state, dict) or "head.classification_head.cls_logits.weight" not in state:
        raise UserError(f"{state_dict_path}: not a retinanet_resnet50_fpn state dict "
                        "(no head.classification_head.cls_logits.weight)")
    spec, converted = import_retinanet_resnet50(state, min_size=min_size, max_size=max_size)
    model = spec.build()
    try:
        model.load_state_dict(converted)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise UserError(f"{state_dict_path}: does not fit retinanet_resnet50_fpn ({first})") from None
    save_checkpoint(out_path, spec, model, source={"torchvision_state_dict": str(state_dict_path)})
    click.echo(f"wrote {out_path}: {spec.arch}, {spec.num_classes} COCO categories")
