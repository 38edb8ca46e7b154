"""`sadpipe publish`: a release copy of a checkpoint — weights kept, training state dropped,
provenance extended with the COCO metrics that `sadpipe eval` measures on the same data."""
import json

import torch
from click.testing import CliRunner

from sadpipe.checkpoint import load_checkpoint
from sadpipe.commands.evaluate import command as eval_command
from sadpipe.commands.publish import command as publish_command
from sadpipe.fileio import file_sha256
from tests.sadpipe.conftest import make_tiny_checkpoint, write_tiny_coco


def test_publish_records_the_metrics_eval_measures(tmp_path):
    ann, images = write_tiny_coco(tmp_path / "val", num_images=4, seed=3)
    checkpoint = make_tiny_checkpoint(tmp_path / "model.pt")
    payload = torch.load(checkpoint, weights_only=True)
    payload["training"] = {"iteration": 7, "optimizer": {"state": {}, "param_groups": []}}
    payload["provenance"] = {"command": "sadpipe train --config x.toml", "iterations": 7}
    torch.save(payload, checkpoint)
    release = tmp_path / "zoo" / "model.pt"

    result = CliRunner().invoke(publish_command, [str(checkpoint), "--annotations", str(ann),
                                                  "--images", str(images), "--out", str(release)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {release}: AP ")

    published = load_checkpoint(release)
    assert "training" not in published
    for key, value in published["state_dict"].items():
        assert torch.equal(value, payload["state_dict"][key]), key
    provenance = published["provenance"]
    assert provenance["command"] == "sadpipe train --config x.toml" and provenance["iterations"] == 7
    assert provenance["published_from"] == {"path": str(checkpoint), "sha256": file_sha256(checkpoint)}
    assert provenance["eval"]["dataset"]["sha256"] == file_sha256(ann)

    out = tmp_path / "eval"
    result = CliRunner().invoke(eval_command, ["--checkpoint", str(release), "--annotations", str(ann),
                                               "--images", str(images), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    measured = json.loads((out / "metrics.json").read_text())["bbox"]
    assert provenance["eval"]["metrics"] == measured
