"""Training curves from metrics.jsonl: what each panel plots, and refusals of bad files."""
import json

import pytest
from matplotlib.colors import to_rgba

from sadpipe.errors import UserError
from sadpipe.evaluation.curves import loss_keys, plot_training_curves, read_metrics

# what the trainer logs: train records every 2 iterations, an evaluation at 4 and 6
RECORDS = [
    {"iteration": 2, "lr": 0.01, "source": "labeled", "loss": 2.0, "loss_cls": 1.5, "loss_box": 0.5},
    {"iteration": 4, "lr": 0.02, "source": "pseudo", "loss": 1.6, "loss_cls": 1.0, "loss_box": 0.4,
     "loss_adl": 0.2, "images_per_s": 30.0},
    {"iteration": 4, "val_AP": 0.10, "val_AP50": 0.3},
    {"iteration": 6, "lr": 0.002, "loss": 1.0, "loss_cls": 0.7, "loss_box": 0.3},
    {"iteration": 6, "val_AP": None, "val_AP50": None},     # undefined: not plotted
]


def _lines(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}


def test_one_run_plots_loss_terms_lr_and_val_ap(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + "\n")
    records = read_metrics(path)
    assert records == RECORDS
    assert loss_keys(records) == ["loss", "loss_cls", "loss_box", "loss_adl"]

    fig = plot_training_curves({"run": records}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    loss_ax, lr_ax, ap_ax = fig.axes
    assert _lines(loss_ax) == {"loss": ([2, 4, 6], [2.0, 1.6, 1.0]), "loss_cls": ([2, 4, 6], [1.5, 1.0, 0.7]),
                               "loss_box": ([2, 4, 6], [0.5, 0.4, 0.3]), "loss_adl": ([4], [0.2])}
    assert loss_ax.get_yscale() == "log"
    assert _lines(lr_ax) == {"run": ([2, 4, 6], [0.01, 0.02, 0.002])}
    assert _lines(ap_ax) == {"run  best 10.0": ([4], [pytest.approx(10.0)])}


def test_runs_compared_on_the_same_axes(tmp_path):
    plain = [r for r in RECORDS if "loss_adl" not in r and "val_AP" not in r]
    fig = plot_training_curves({"baseline": plain, "distilled": RECORDS}, tmp_path / "c.png")
    loss_ax, lr_ax, ap_ax = fig.axes
    labels = set(_lines(loss_ax))
    assert "baseline: loss_cls" in labels and "distilled: loss_adl" in labels
    assert "baseline: loss_adl" not in labels
    colours = {line.get_label(): to_rgba(line.get_color()) for line in lr_ax.lines}
    assert colours["baseline"] != colours["distilled"]
    assert _lines(ap_ax)["baseline"] == ([], [])
    assert [t.get_text() for t in ap_ax.texts] == []   # one run was evaluated


def test_without_evaluation_the_ap_panel_says_so(tmp_path):
    fig = plot_training_curves({"run": RECORDS[:2]}, tmp_path / "c.png")
    assert "train.eval_period = 0" in fig.axes[2].texts[0].get_text()


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not JSON"),
    ('{"lr": 0.1}', "line 2: expected an object with an integer 'iteration'"),
])
def test_bad_metrics_file_names_the_line(tmp_path, line, message):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + line + "\n")
    with pytest.raises(UserError, match=message):
        read_metrics(path)
