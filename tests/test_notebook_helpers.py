"""The Figures page's training-curve helpers (`thadcr.interfaces.notebook.figures`: `training_logs`,
`training_curves_figure`, `training_curves_sentence`, `show_training_curves`) on small
made-up ``log.csv`` files, and the title of the model picture."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

RECALLS = ("val_t2a_R1", "val_t2a_R5", "val_t2a_R10", "val_a2t_R1", "val_a2t_R5", "val_a2t_R10")


def write_log(root: Path, method: str, seed: int, losses, rsums) -> Path:
    """A run's log.csv under ``root/runs`` with the given loss and R-sum per epoch (the
    R-sum split evenly over the six validation recalls)."""
    import pandas as pd

    from thadcr.interfaces.notebook.method import table1_run_id

    path = root / "runs" / table1_run_id(method, seed=seed) / "log.csv"
    path.parent.mkdir(parents=True)
    frame = pd.DataFrame({"epoch": range(1, len(losses) + 1), "loss": losses,
                          "loss_S": losses, "loss_D": 0.0, "loss_A": 0.0})  # fmt: skip
    for name in RECALLS:
        frame[name] = [r / len(RECALLS) for r in rsums]
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def two_methods(tmp_path: Path) -> Path:
    """DP (HTSAT) with seeds 0 and 1 and THA with seed 0, two epochs each; the other
    Table 1 runs are missing."""
    write_log(tmp_path, "DP (HTSAT)", 0, [3.0, 1.0], [60.0, 90.0])
    write_log(tmp_path, "DP (HTSAT)", 1, [2.0, 1.4], [80.0, 75.0])
    write_log(tmp_path, "THA", 0, [2.6, 0.8], [70.0, 100.0])
    return tmp_path


def test_training_logs_read_every_seed_and_name_the_missing(two_methods: Path) -> None:
    from thadcr.interfaces.notebook.figures import training_logs
    from thadcr.interfaces.notebook.method import table1_run_id

    curves, notes = training_logs(two_methods, "tiny", seeds=2)
    assert list(dict.fromkeys(curves["method"])) == ["DP (HTSAT)", "THA"]
    assert sorted(curves.groupby("method")["seed"].unique()["DP (HTSAT)"]) == [0, 1]
    assert curves["rsum"].tolist() == pytest.approx([60.0, 90.0, 80.0, 75.0, 70.0, 100.0])
    # the tiny plan with 2 seeds: 3 methods x 2 seeds and the 3 THA methods x 1 (THA rows run one
    # seed), 3 logs there: 6 notes, each the page's usual "missing" message
    assert len(notes) == 6
    texts = [note.data for note in notes]
    assert all("is missing" in t and "`thadcr reproduce --profile tiny`" in t for t in texts)
    assert any(table1_run_id("DCR", seed=1) in t for t in texts)
    assert not any(table1_run_id("THA", seed=0) in t for t in texts)  # there
    assert not any(table1_run_id("THA", seed=1) in t for t in texts)  # not planned


def test_training_curves_sentence_names_the_files_numbers(two_methods: Path) -> None:
    from thadcr.interfaces.notebook.figures import training_curves_sentence, training_logs

    curves, _ = training_logs(two_methods, "tiny", seeds=2)
    text = training_curves_sentence(curves)
    assert text.startswith("Every run's `log.csv` holds 2 epochs, so each curve is two points")
    assert "nothing about whether training had converged" in text
    assert "From epoch 1 to epoch 2" in text
    # seed counts differ between the methods: named
    assert "means over each variant's seeds (DP (HTSAT) 2, THA 1)" in text
    # loss: DP (HTSAT) means 2.5 -> 1.2, THA 2.6 -> 0.8; both fell, in all 3 runs
    assert "training loss L fell in both variants and in all 3 runs" in text
    assert "DP (HTSAT): 2.50 to 1.20; THA: 2.60 to 0.80" in text
    # R-sum: DP (HTSAT) means 70 -> 82.5, THA 70 -> 100; seed 1 of DP (HTSAT) fell
    assert "validation R-sum rose in both variants and in 2 of the 3 runs" in text
    assert "DP (HTSAT): 70.0 to 82.5; THA: 70.0 to 100.0" in text
    # at epoch 2: means 82.5 and 100 (17.5 apart), the seeds of DP (HTSAT) 90 and 75
    assert text.endswith("At epoch 2 the means of the variants' validation R-sums span 17.5 "
                         "points, and the seeds of one variant lie up to 15.0 points apart.")


def test_training_curves_sentence_says_mixed_changes_and_other_lengths(tmp_path: Path) -> None:
    from thadcr.interfaces.notebook.figures import training_curves_sentence, training_logs

    write_log(tmp_path, "DP (HTSAT)", 0, [3.0, 2.0, 1.5], [60.0, 70.0, 80.0])
    write_log(tmp_path, "THA", 0, [2.0, 2.5, 2.2], [90.0, 80.0, 85.0])
    write_log(tmp_path, "DCR", 0, [2.0, 1.0, 0.5], [50.0, 55.0, 65.0])
    text = training_curves_sentence(training_logs(tmp_path, "tiny", seeds=1)[0])
    assert text.startswith("Every run's `log.csv` holds 3 epochs (epochs 1 to 3)")
    assert "converged" not in text and "From epoch 1 to epoch 3 (one seed per variant)" in text
    assert "training loss L fell in 2 of 3 variants and rose in 1" in text
    assert "THA: 2.00 to 2.20" in text and "validation R-sum rose in 2 of 3 variants and fell in 1" in text
    assert "span" not in text  # one seed each: no seed spread to compare with

    other = tmp_path / "other"
    write_log(other, "DP (HTSAT)", 0, [3.0, 2.0], [60.0, 70.0])
    write_log(other, "THA", 0, [2.0], [90.0])
    text = training_curves_sentence(training_logs(other, "tiny", seeds=1)[0])
    assert text.startswith("The runs' `log.csv` files hold 1 to 2 epochs")
    assert "From each run's first logged epoch to its last" in text
    assert "THA: 2.00 to 2.00" in text and "did not change" in text

    single = tmp_path / "single"
    write_log(single, "DCR", 0, [3.0], [60.0])
    assert "single epoch" in training_curves_sentence(training_logs(single, "tiny", seeds=1)[0])


def test_training_curves_figure_has_a_panel_per_variant_on_shared_scales(two_methods: Path) -> None:
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    from thadcr.interfaces.notebook.figures import (BODY_PX, COLUMN_PX, TRAINING_CURVES, figure_style,
                                                    training_curves_figure, training_logs)

    figure_style()
    curves, _ = training_logs(two_methods, "tiny", seeds=2)
    fig = training_curves_figure(curves)
    blocks = fig.subfigs
    assert [b._suptitle.get_text() for b in blocks] == [name for name, _ in TRAINING_CURVES.values()]
    for block in blocks:
        shown = [ax for ax in block.axes if ax.get_visible()]
        assert [ax.get_title() for ax in shown] == ["DP (HTSAT)", "THA"]  # one panel a variant
        assert shown[0].get_shared_y_axes().joined(shown[0], shown[1])  # one y scale a quantity
        sizes = [ax.title.get_fontsize() * fig.dpi / 72 for ax in shown]
        assert sizes == pytest.approx([BODY_PX] * len(shown)), "panel titles not at body size"
    # DP (HTSAT): two seeds and their mean; THA: its one seed
    loss_axes = [ax for ax in blocks[0].axes if ax.get_visible()]
    assert len(loss_axes[0].lines) == 3 and len(loss_axes[1].lines) == 1
    assert loss_axes[0].lines[-1].get_ydata().tolist() == pytest.approx([2.5, 1.2])
    # the legend is under the panels, over no data area
    fig.canvas.draw()
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["each seed", "mean over the seeds"]
    box = legend.get_window_extent()
    assert not any(box.overlaps(ax.get_window_extent()) for ax in fig.axes if ax.get_visible())
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")  # as the inline backend does
    assert Image.open(buffer).size[0] <= COLUMN_PX
    plt.close("all")


def test_show_training_curves_shows_the_missing_notes_only_without_logs(
        two_methods: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display
    from matplotlib.figure import Figure

    from thadcr.interfaces.notebook.figures import show_training_curves

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    show_training_curves(two_methods, "tiny", seeds=2)
    kinds = [type(item).__name__ for item in shown]
    assert kinds == ["Markdown"] * 6 + ["Figure", "Markdown"]  # 6 missing logs (the tiny plan, 2 seeds)
    assert isinstance(shown[6], Figure) and "holds 2 epochs" in shown[7].data

    shown.clear()
    show_training_curves(tmp_path / "empty", "paper", seeds=1)
    assert len(shown) == 6 and all("is missing" in item.data and "--profile paper" in item.data
                                   for item in shown)  # fmt: skip


def test_model_diagram_has_a_title_inside_its_figure() -> None:
    import matplotlib.pyplot as plt

    from thadcr.config import make_config
    from thadcr.interfaces.notebook.method import DIAGRAM_TITLE, model_diagram

    ax = model_diagram(make_config("tiny"))
    assert ax.get_title() == DIAGRAM_TITLE and "data flow" in DIAGRAM_TITLE
    ax.figure.canvas.draw()
    title, page = ax.title.get_window_extent(), ax.figure.bbox
    assert page.x0 <= title.x0 and title.x1 <= page.x1 and title.y1 <= page.y1
    plt.close("all")
