"""``sadpipe inspect-shards DIR [--verify]``: what a teacher-shard directory holds."""
import click

from sadpipe.errors import UserError

MAX_SKIPPED_SHOWN = 5


@click.command(name="inspect-shards")
@click.argument("shard_dir", metavar="SHARD_DIR")
@click.option("--verify", is_flag=True,
              help="Also read every shard: compare its sha256 and sample count with the "
                   "manifest, check every sample's checksum and decode every view.")
def command(shard_dir, verify):
    """Summarise the teacher shards in SHARD_DIR (made by `sadpipe cache-logits`).

    Prints the codec, the numbers of shards, images and views, the skipped images, the
    bytes per view against dense fp16 scores, and the fraction of (anchor, class) scores the
    codec keeps exactly on each pyramid level. SHARD_DIR may also be a URL prefix that
    webdataset can open. With --verify every shard is read and checked; any problem is
    listed and the command exits with status 1.

    \b
    Example:
      sadpipe inspect-shards work/demo/shards --verify
    """
    from shards import ShardError, read_manifest, verify_shards

    try:
        manifest = read_manifest(shard_dir)
        for line in summary_lines(shard_dir, manifest):
            click.echo(line)
        if verify:
            report = verify_shards(shard_dir)
    except ShardError as err:
        raise UserError(str(err)) from None
    if verify:
        for problem in report.problems:
            click.echo(f"  problem: {problem}")
        if not report.ok:
            raise UserError(f"{shard_dir}: verification failed ({len(report.problems)} "
                            f"problem(s) listed above)")
        click.echo(f"verify: OK ({report.shards} shards, {report.samples} images, "
                   f"{report.views} views checked; kept per level "
                   f"{_percentages(report.kept_fraction_per_level)})")


def summary_lines(shard_dir, manifest):
    """Human-readable lines describing a manifest."""
    totals = manifest["totals"]
    codec = ", ".join(f"{k}={v}" for k, v in manifest["codec"].items() if k != "name")
    lines = [
        f"shards:  {shard_dir} (format {manifest['format_version']}, written by "
        f"{manifest['world_size']} rank(s))",
        f"codec:   {manifest['codec'].get('name')} ({codec})",
        f"header:  fields {', '.join(sorted(manifest['header'])) or '(none)'}",
        f"content: {totals['shards']} shards, {totals['samples']} images, {totals['views']} "
        f"views, {totals['skipped']} images skipped",
        f"size:    {totals['payload_bytes_per_view']:,.0f} B per view (dense fp16 "
        f"{totals['dense_fp16_bytes_per_view']:,.0f} B: {totals['compression_vs_fp16']:.1f}x "
        f"smaller); shard files {totals['shard_bytes']:,} B in all",
        f"kept:    {_percentages(totals['kept_fraction_per_level'])} of scores per level",
        f"command: {manifest.get('command')}",
    ]
    for skipped in manifest["skipped"][:MAX_SKIPPED_SHOWN]:
        lines.append(f"  skipped {skipped['key']}: {skipped['reason']}")
    if len(manifest["skipped"]) > MAX_SKIPPED_SHOWN:
        lines.append(f"  ... and {len(manifest['skipped']) - MAX_SKIPPED_SHOWN} more skipped")
    return lines


def _percentages(fractions):
    return " ".join(f"L{i}:{100 * f:.2f}%" for i, f in enumerate(fractions)) or "(no views)"
