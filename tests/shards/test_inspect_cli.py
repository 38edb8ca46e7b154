"""`sadpipe inspect-shards DIR [--verify]`: summary, verification, one-line errors."""
import json

from click.testing import CliRunner

from sadpipe.cli import cli

from .conftest import LEVEL_SIZES


def invoke(*args):
    return CliRunner().invoke(cli, ["inspect-shards", *map(str, args)])


def test_summary_and_verification(shard_dir):
    result = invoke(shard_dir, "--verify")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "4 shards, 9 images, 18 views, 1 images skipped" in out
    assert "skipped k0007: cannot identify image file" in out
    assert f"dense fp16 {sum(LEVEL_SIZES) * 3 * 2:,} B" in out
    assert "verify: OK (4 shards, 9 images, 18 views checked" in out
    assert out.count("L0:") == 2  # kept fractions: from the manifest and from the shards


def test_without_verify_only_the_manifest_is_read(shard_dir):
    (shard_dir / "rank00-000000.tar").write_bytes(b"broken")
    result = invoke(shard_dir)
    assert result.exit_code == 0 and "verify:" not in result.output


def test_problems_are_listed_and_exit_nonzero(shard_dir):
    path = shard_dir / "rank01-000001.tar"
    path.write_bytes(path.read_bytes()[:3000])
    result = invoke(shard_dir, "--verify")
    assert result.exit_code == 1
    assert "problem: shard rank01-000001.tar" in result.output
    assert "Error: " in result.output and "Traceback" not in result.output


def test_bad_directories_give_one_line_errors(tmp_path, shard_dir):
    result = invoke(tmp_path / "missing")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    manifest["totals"]["samples"] = 1000
    (shard_dir / "manifest.json").write_text(json.dumps(manifest))
    result = invoke(shard_dir)
    assert result.exit_code == 1 and "edited by hand" in result.output
    assert result.output.count("\n") == 1


def test_help_explains_the_command():
    result = CliRunner().invoke(cli, ["inspect-shards", "--help"])
    assert result.exit_code == 0
    assert "SHARD_DIR" in result.output and "--verify" in result.output
