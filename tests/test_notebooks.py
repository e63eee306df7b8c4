"""The book's notebooks and the helpers their pages use, without building the book.

The notebooks (``notebooks/*.py``): one jupytext pairing convention, each committed ``.ipynb`` with
the cells of its ``.py``, code lines that fit the page, the train, figures and tables notebooks run
on synthetic results (the ``rendered`` fixture of tests/conftest.py), and papermill passing the
parameters to a stub train notebook. The helpers (``thadcr.interfaces.notebook``): the Figures
page's training curves on small made-up ``log.csv`` files, the model diagram (its title and
labels), ranks, scene lists, the result and objective sentences, the claims table and its forest
plot, and the paper and learning tables. Tests marked ``book`` run with the book's (``-m book``)
but need no built book; tests/test_book.py checks the built pages.
"""

from __future__ import annotations

import html
import json
import re
import sys
import types
from pathlib import Path

import matplotlib
import pytest

from html_page import FILE_COLUMNS, Page
from synthetic import STUB_TRAIN_NOTEBOOK, synthetic_claims, write_fake_run, write_log
from thadcr.experiments import execution
from thadcr.experiments.execution import execute
from thadcr.experiments.plan import TABLE_ROWS, Run, plan, runs_dir

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


# --- the Figures page's training curves and the model picture's title -----------------------------


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
    # seed counts differ between the methods: named, grouped by their number
    assert "Each variant's values are means over its seeds: 2 for DP (HTSAT); 1 for THA." in text
    # loss: DP (HTSAT) means 2.5 -> 1.2, THA 2.6 -> 0.8; both fell, in all 3 runs
    assert ("From epoch 1 to epoch 2 the training loss L fell in both variants and in all 3 runs "
            "(DP (HTSAT): 2.50 to 1.20; THA: 2.60 to 0.80).") in text
    assert "came between epochs" not in text  # two epochs: the first step is the whole change
    # R-sum: DP (HTSAT) means 70 -> 82.5, THA 70 -> 100; seed 1 of DP (HTSAT) fell
    assert "validation R-sum rose in both variants and in 2 of the 3 runs" in text
    assert "DP (HTSAT): 70.0 to 82.5; THA: 70.0 to 100.0" in text
    # at epoch 2: means 82.5 and 100 (17.5 apart), the seeds of DP (HTSAT) 90 and 75
    assert text.endswith("At epoch 2 the means of the variants' validation R-sums span 17.5 points, "
                         "from 82.5 (DP (HTSAT)) to 100.0 (THA), and the seeds of one variant lie up to "
                         "15.0 points apart (DP (HTSAT)). These are validation scores; the Tables page "
                         "compares the variants on the test set, with intervals.")


def test_training_curves_sentence_says_mixed_changes_and_other_lengths(tmp_path: Path) -> None:
    from thadcr.interfaces.notebook.figures import training_curves_sentence, training_logs

    write_log(tmp_path, "DP (HTSAT)", 0, [3.0, 2.0, 1.5], [60.0, 70.0, 80.0])
    write_log(tmp_path, "THA", 0, [2.0, 2.5, 2.2], [90.0, 80.0, 85.0])
    write_log(tmp_path, "DCR", 0, [2.0, 1.0, 0.5], [50.0, 55.0, 65.0])
    text = training_curves_sentence(training_logs(tmp_path, "tiny", seeds=1)[0])
    assert text.startswith("Every run's `log.csv` holds 3 epochs (epochs 1 to 3)")
    assert "converged" not in text and "Each variant ran one seed." in text
    assert "From epoch 1 to epoch 3 the training loss L fell in 2 of 3 variants and rose in 1" in text
    assert "came between epochs" not in text  # the variants changed in different directions
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
    assert [b._suptitle.get_text() for b in blocks] == [name for name, _, _ in TRAINING_CURVES.values()]
    for block in blocks:
        shown = [ax for ax in block.axes if ax.get_visible()]
        assert [ax.get_title() for ax in shown] == ["DP (HTSAT)", "THA"]  # one panel a variant
        assert shown[0].get_shared_y_axes().joined(shown[0], shown[1])  # one y scale a quantity
        sizes = [ax.title.get_fontsize() * fig.dpi / 72 for ax in shown]
        assert sizes == pytest.approx([BODY_PX] * len(shown)), "panel titles not at body size"
    # DP (HTSAT): two seeds and their mean; THA: its one seed
    loss_axes = [ax for ax in blocks[0].axes if ax.get_visible()]
    assert len(loss_axes[0].lines) == 3 and len(loss_axes[1].lines) == 1
    assert loss_axes[0].get_yscale() == "log" and blocks[1].axes[0].get_yscale() == "linear"
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


def test_training_curves_read_a_quantity_validated_at_one_epoch(tmp_path: Path) -> None:
    """The tiny profile validates its last epoch only: the R-sum is one value per run, read as such
    (no change) and drawn as one panel with the methods side by side; over three epochs of loss the
    reading says how much of each fall came in the first step."""
    import matplotlib.pyplot as plt

    from thadcr.interfaces.notebook.figures import (figure_style, training_curves_figure,
                                                    training_curves_sentence, training_logs)

    nan = float("nan")
    write_log(tmp_path, "DP (HTSAT)", 0, [3.0, 1.5, 1.0], [nan, nan, 80.0])
    write_log(tmp_path, "DP (HTSAT)", 1, [2.0, 1.0, 0.6], [nan, nan, 70.0])
    write_log(tmp_path, "THA", 0, [2.6, 1.0, 0.6], [nan, nan, 60.0])
    curves, _ = training_logs(tmp_path, "tiny", seeds=2)
    text = training_curves_sentence(curves)
    # loss means: DP (HTSAT) 2.5, 1.25, 0.8 (1.25 of 1.7 in the first step), THA 2.6, 1.0, 0.6 (1.6 of 2.0)
    assert "(DP (HTSAT): 2.50 to 0.80; THA: 2.60 to 0.60); 74 to 80 % of each variant's fall came " \
           "between epochs 1 and 2." in text
    assert ("The validation R-sum was measured at epoch 3 only, one value per run, so it shows no change "
            "over training (DP (HTSAT): 75.0; THA: 60.0).") in text
    assert "rose in" not in text and "did not change" not in text
    assert "span 15.0 points, from 60.0 (THA) to 75.0 (DP (HTSAT))" in text

    figure_style()
    fig = training_curves_figure(curves)
    loss, rsum = fig.subfigs
    assert rsum._suptitle.get_text().endswith(", epoch 3 only") and len(rsum.axes) == 1
    panel = rsum.axes[0]
    assert [t.get_text() for t in panel.get_xticklabels()] == ["DP\n(HTSAT)", "THA"]
    means = [line for line in panel.lines if line.get_label() == "mean over the seeds"]
    assert [line.get_ydata()[0] for line in means] == pytest.approx([75.0, 60.0])
    seeds = [line for line in panel.lines if line.get_label() == "each seed"]
    assert len(seeds) == 1 and sorted(seeds[0].get_ydata()) == pytest.approx([70.0, 80.0])  # THA: one seed, no dots
    assert len([ax for ax in loss.axes if ax.get_visible()]) == 2  # the loss keeps its curves
    fig.canvas.draw()
    box = fig.legends[0].get_window_extent()
    assert not any(box.overlaps(ax.get_window_extent()) for ax in fig.axes if ax.get_visible())
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


# --- the notebooks: jupytext pairing, code width, execution ---------------------------------------


def test_jupytext_pairing_has_one_convention() -> None:
    """Notebooks with a committed golden .ipynb declare ``formats: ipynb,py:percent``; the others
    ``py:percent`` only (docs/decisions/notebooks.md)."""
    wrong = []
    for source in sorted((ROOT / "notebooks").glob("*.py")):
        found = re.search(r"^#\s+formats:\s*(\S+)\s*$", source.read_text(encoding="utf-8"), re.M)
        expected = "ipynb,py:percent" if source.with_suffix(".ipynb").is_file() else "py:percent"
        if not found or found.group(1) != expected:
            wrong.append(f"{source.name}: {found.group(1) if found else 'no formats line'}, expected {expected}")
    assert not wrong, "jupytext pairing:\n" + "\n".join(wrong)


def test_notebook_code_fits_the_page() -> None:
    """Code lines of the book's notebooks stay within 88 characters (the measured width of the
    book's code column at 1280 px); the browser test checks the rendered pages."""
    pages = [Path(entry) for entry in re.findall(r"file: (notebooks/\w+)", (ROOT / "_toc.yml").read_text())]
    assert len(pages) >= 7
    long = []
    for page in pages:
        for number, line in enumerate((ROOT / page).with_suffix(".py").read_text().splitlines(), 1):
            if len(line) > 88 and not line.startswith("#"):
                long.append(f"{page}.py:{number}: {len(line)} characters")
    assert not long, "\n".join(long)


@pytest.mark.parametrize("name", ["train", "encoders", "tha", "dcr", "ca", "objective"])
def test_paired_ipynb_has_the_cells_of_its_py(name):
    """A committed .ipynb (golden outputs, or papermill's train notebook) must be regenerated
    whenever its .py changes (docs/decisions/notebooks.md gives the commands)."""
    import jupytext

    def cells(notebook):
        return [(c.cell_type, c.source.strip()) for c in notebook.cells]

    paired = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    assert cells(paired) == cells(jupytext.read(NOTEBOOKS / f"{name}.py")), (
        f"notebooks/{name}.ipynb is out of date with notebooks/{name}.py: regenerate it")


def notebook_code(name: str, parameters: dict) -> str:
    """The notebook's code cells, with `parameters` assigned after its parameters cell."""
    import jupytext

    notebook = jupytext.read(NOTEBOOKS / name)
    parts = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        parts.append(cell.source)
        if "parameters" in cell.metadata.get("tags", []):
            parts.append("\n".join(f"{k} = {v!r}" for k, v in parameters.items()))
    return "\n\n".join(parts)


@pytest.mark.slow
def test_train_notebook_builds_the_config_and_plots(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    seen = {}

    def fake_train(config, out_dir, resume=False, progress=True):
        seen.update(config=config, out_dir=out_dir, resume=resume)
        run = Run("tiny", "clotho", config.variant, config.audio_encoder, config.n_factors, config.alpha,
                     config.beta, config.seed)  # fmt: skip
        folder = write_fake_run(Path(out_dir).parent, run, name=Path(out_dir).name)
        return json.loads((folder / "metrics.json").read_text())

    monkeypatch.setitem(sys.modules, "thadcr.run.train", types.SimpleNamespace(train=fake_train))
    out = tmp_path / "run"
    params = {"variant": "DCR", "dataset": "clotho", "n_factors": 10, "beta": 0.01, "epochs": 2,
              "out_dir": str(out), "overrides": {"audio_encoder": "resnet38"}, "resume": True}  # fmt: skip
    namespace: dict = {}
    exec(compile(notebook_code("train.py", params), "train.py", "exec"), namespace)
    config = seen["config"]
    assert (config.variant, config.n_factors, config.beta, config.epochs) == ("DCR", 10, 0.01, 2)
    assert (config.data_root, config.audio_encoder, seen["resume"]) == ("data/embedded/clotho", "resnet38", True)
    assert namespace["table"].shape == (2, 4)
    assert namespace["table"].loc["Audio-to-Text", "R@10"] == pytest.approx(namespace["metrics"]["test"]["a2t_R10"])
    assert len(namespace["fig"].axes) == 2 and namespace["fig"].axes[0].lines
    plt.close("all")


@pytest.mark.slow
def test_figures_notebook_on_synthetic_and_on_missing_results(rendered, monkeypatch):
    import IPython.display
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(getattr(obj, "data", obj)))
    results, *_ = rendered
    namespace: dict = {}
    code = notebook_code("figures.py", {"profile": "tiny", "results_dir": str(results)})
    exec(compile(code, "figures.py", "exec"), namespace)
    assert namespace["factors_run"] == "audiocaps-THA+DCR-htsat-K8-a0.01-b0.005-s0"
    curves, notes = namespace["page"].training_logs(namespace["root"], "tiny")  # what the curves cell drew
    assert set(curves["method"]) == {m for m, _ in TABLE_ROWS[1]}
    assert any("From epoch 1 to epoch" in str(text) for text in shown)  # the reading under the curves
    titles = [plt.figure(n).axes[0].get_title() for n in plt.get_fignums()]  # the curves' figure is shown and closed
    assert len(titles) == 3 and titles[0] == "Table 4: K"  # changes from the default (K, alpha, beta), C, g
    assert "No paired runs yet" in str(shown[0])  # the synthetic runs keep no test ranks: no forest plot, said so
    assert any("K=10" in str(text) for text in shown)  # the missing K=10 run is named
    plt.close("all")
    shown.clear()
    empty: dict = {}
    exec(compile(notebook_code("figures.py", {"results_dir": str(results / "none")}), "figures.py", "exec"), empty)
    named = [str(text) for text in shown if "is missing" in str(text)]
    assert empty["factors"] is None and sum("claims.csv" in text for text in named) == 2  # forest plot, changes
    # Table 1's logs of the default plan: 8 seeds of the 3 rows without THA, 1 of the 3 THA rows
    assert sum("log.csv" in text for text in named) == 27 and sum("factors.npz" in text for text in named) == 2
    assert plt.get_fignums() == []


@pytest.mark.slow
def test_tables_notebook_executes_with_papermill(rendered):
    import jupytext
    import papermill

    results, *_ = rendered
    source = tmp_ipynb = results / "tables.ipynb"
    jupytext.write(jupytext.read(NOTEBOOKS / "tables.py"), source)
    output = results / "tables_out.ipynb"
    papermill.execute_notebook(str(tmp_ipynb), str(output), parameters={"profile": "tiny", "results_dir": str(results)},
                               kernel_name="python3", progress_bar=False, cwd=str(results))  # fmt: skip
    text = output.read_text()
    assert "Table 5: Effect of the trade-off" in text and "41.1 ± 0.6" in text
    assert "55 of 57 complete" in text and "audiocaps-DCR-htsat-K10-a0.01-b0.005-s0" in text
    assert "runs at least 3 times chance in both directions" in text and "of 55**" in text


@pytest.mark.slow
def test_papermill_passes_the_parameters_to_a_stub_notebook(tmp_path, monkeypatch):
    """The real papermill path, with a stub in place of notebooks/train.py (one kernel start)."""
    stub = tmp_path / "stub_train.py"
    stub.write_text(STUB_TRAIN_NOTEBOOK)
    monkeypatch.setattr(execution, "TRAIN_NOTEBOOK", stub)
    monkeypatch.chdir(tmp_path)
    run = next(r for r in plan("tiny", tables=(4,), seeds=1) if r.n_factors == 10)
    (runs_dir(tmp_path / "results", "tiny") / run.run_id).mkdir(parents=True)  # an interrupted run
    record = execute([run], tmp_path / "results", progress=False, fill=False)  # a stub needs no features
    assert record["done"] == [run.run_id], record["failed"]
    folder = runs_dir(tmp_path / "results", "tiny") / run.run_id
    seen = json.loads((folder / "metrics.json").read_text())["seen"]
    assert seen == {"variant": "DCR", "dataset": "audiocaps", "overrides": {"audio_encoder": "htsat"},
                    "resume": True, "epochs": None, "alpha": 0.01, "cwd": str(tmp_path)}  # fmt: skip
    executed = json.loads((folder / "run.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])


# --- helpers of the pages (thadcr.interfaces.notebook) --------------------------------------------


def test_model_diagram_labels_follow_the_config() -> None:
    from thadcr.config import make_config
    from thadcr.interfaces.notebook.method import diagram_labels

    paper = diagram_labels(make_config("paper-audiocaps"))
    assert paper["audio_levels"].split("\n") == ["$A^{s2}$ (B, 1024, 192)", "$A^{s3}$ (B, 256, 384)",
                                                 "$A^{s4}$ (B, 64, 768)"]  # fmt: skip
    assert "(B, N, 768)" in paper["text_levels"] and "T^{4}, T^{10}, T^{12}" in paper["text_levels"]
    assert "(B, 768)" in paper["audio_global"] and "(B, K=8, D/K=96)" in paper["audio_factors"]
    assert "log-mel (B, 1001, 64)" in paper["audio_in"] and "pooled" not in paper["tha"]
    tiny = diagram_labels(make_config("tiny", {"n_factors": 4}))
    assert "$A^{s2}$ (B, 256, 64)" in tiny["audio_levels"] and "pooled to 64, 64, 16" in tiny["tha"]
    assert "(B, N, 384)" in tiny["text_levels"] and "(B, K=4, D/K=16)" in tiny["text_factors"]
    assert "log-mel (B, 501, 64)" in tiny["audio_in"] and "C (4, 4)" in tiny["corr"]


def test_ranks_of_counts_ties_against_the_relevant_items() -> None:
    from thadcr.interfaces.notebook.method import ranks_of

    scores = [0.9, 0.5, 0.5, 0.1, 0.7]
    assert ranks_of(scores, [False, True, False, False, False]).tolist() == [4]  # tied with item 2
    assert ranks_of(scores, [True, False, False, True, True]).tolist() == [1, 5, 2]


def test_scene_events_reads_the_scene_list(tmp_path: Path) -> None:
    from thadcr.interfaces.notebook.method import scene_events

    import csv

    timelines = {"a.wav": {"events": [{"class": "dog"}, {"class": "door_close"}], "background": {"class": "wind"}},
                 "b.wav": {"events": [{"class": "cat"}], "background": None}}  # fmt: skip
    with (tmp_path / "scenes_evaluation.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "timeline", "sources", "licences"])
        writer.writerows([name, json.dumps(timeline), "x", "y"] for name, timeline in timelines.items())
    scenes = scene_events(tmp_path)
    assert scenes == {"a.wav": {"events": ["dog", "door_close"], "background": "wind"},
                      "b.wav": {"events": ["cat"], "background": None}}  # fmt: skip
    with pytest.raises(FileNotFoundError, match="thadcr data build"):
        scene_events(tmp_path, "validation")


def test_result_sentences_say_what_the_numbers_show() -> None:
    import numpy as np

    from thadcr.interfaces.notebook.method import confidence_sentence, factor_loss_sentence, table1_run_id

    assert table1_run_id("DCR") == "audiocaps-DCR-htsat-K8-a0.01-b0.005-s0"
    assert table1_run_id("DP (ResNet38)", seed=2) == "audiocaps-DP-resnet38-K8-a0.01-b0.005-s2"
    near = np.eye(3) * 0.2 + 0.01
    better = np.eye(3) * 0.9
    assert "L_D fell" in factor_loss_sentence(near, better) and "L_A fell" in factor_loss_sentence(near, better)
    worse = better + 0.3 * (1 - np.eye(3))
    rose = factor_loss_sentence(better, worse)
    assert "L_D rose" in rose and "L_A did not fall" in rose
    rng = np.random.default_rng(0)
    g = rng.normal(size=(500, 8))
    assert "does not separate" in confidence_sentence(g, rng.normal(size=(500, 8)))
    assert "larger confidence more often than chance, as" in confidence_sentence(g + 1.0, g[::-1])
    assert "the opposite" in confidence_sentence(g - 1.0, g[::-1])


def test_objective_sentence_says_what_the_numbers_show() -> None:
    from thadcr.interfaces.notebook.method import objective_sentence

    values = {"L_S": 0.5, "alpha L_D": 0.25, "beta L_A": 0.25}
    norms = {"L_S": 3.0, "alpha L_D": 0.1, "beta L_A": 0.2, "L": 3.1}
    text = objective_sentence(values, norms, {"L_S": 1.0, "alpha L_D": 0.05, "beta L_A": 0.08}, 2.0)
    assert "L = 1.0000, of which L_S 50 %, alpha L_D 25 %, beta L_A 25 %" in text
    assert "above the clipping threshold 2: training scales it by 0.65" in text
    assert "30 times as large as alpha L_D's and 15 times beta L_A's" in text
    assert "it is 20.0 and 12.5 times as large: even there L_S sets the direction" in text
    small = {**norms, "L": 1.5}
    assert "visible part" in objective_sentence(values, small, {"L_S": 1.0, "alpha L_D": 0.5, "beta L_A": 0.2}, 2.0)
    assert "not clipped" in objective_sentence(values, small, {"L_S": 1.0, "alpha L_D": 0.5, "beta L_A": 0.2}, 2.0)
    assert "outweighs L_S" in objective_sentence(values, norms, {"L_S": 0.1, "alpha L_D": 0.5, "beta L_A": 0.2}, 2.0)
    assert "no gradient" in objective_sentence(values, norms, {"L_S": 0.1, "alpha L_D": 0.0, "beta L_A": 0.2}, 2.0)


def cells_of(tag: str, text: str) -> list[str]:
    """The text of each ``tag`` cell (th or td) of an HTML fragment, entities decoded."""
    cells = re.findall(rf"<{tag}\b[^>]*>(.*?)</{tag}>", text, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in cells]


def test_claims_table_is_a_readers_table_over_any_columns_and_verdicts() -> None:
    from thadcr.interfaces.notebook.results import CLAIM_HEADERS, claims_table, verdict_colours, verdict_tally

    claims = synthetic_claims()
    table = claims_table(claims, titles={1: "first", 4: "fourth"})
    doc = Page(table.html)
    assert doc.count("table") == 1 and "dataframe" not in table.html
    headers = cells_of("th", table.html.split("</thead>")[0])
    assert headers == [CLAIM_HEADERS[c] for c in ("claim", "paper_effect", "effect", "interval", "verdict", "n_seeds")]
    groups = cells_of("th", "".join(re.findall(r'<tr class="group">.*?</tr>', table.html)))
    assert groups == ["Table 1: first", "Table 4: fourth", "Table 5"]
    rows = [cells_of("td", row) for row in re.findall(r"<tr>(.*?)</tr>", table.html.split("<tbody>")[1])]
    # no index: each row starts with its claim (and the letter of its footnote)
    assert [row[0] for row in rows] == [f"{claim}\xa0{letter}" for claim, letter in zip(claims["claim"], "aabcdd")]
    assert rows[0][1:] == ["23.1", "-3.3", "-21.1 to 14.5", "● undecided", "3"]
    assert rows[4][1:] == ["1.3", "–", "–", "● missing", "0"]  # no runs: no effect, no interval
    # the basis texts are footnotes, one per distinct text, and each claim links to its own
    notes = dict(re.findall(r'<li id="claim-basis-(\w+)"><b>\w+</b> ([^<]*)</li>', table.html))
    assert notes == {"a": "3.2: A beats B", "b": "3.3: C is best", "c": "3.3: K = 8 is optimal",
                     "d": "3.3: x = 1 is best"}  # fmt: skip
    assert re.findall(r'href="#claim-basis-(\w+)"', table.html) == list("aabcdd")
    # every verdict with its own colour, the new one too; the unknown column is named, not shown
    colours = verdict_colours(claims["verdict"])
    assert len(set(colours.values())) == 5 and colours["holds"] == "#2ca02c"
    new = "smaller than the paper's"
    assert [row[4] for row in rows] == [f"● {verdict}" for verdict in claims["verdict"]]
    assert f'style="color: {colours[new]}">●</span> {html.escape(new)}' in table.html
    assert "new_spread" in doc.text and "new_spread" not in headers
    tally = verdict_tally(claims, "tiny")
    assert tally.startswith("Verdicts of the 6 claims on the `tiny` runs:")
    for count, verdict in ((1, "holds"), (1, "contradicted"), (2, "undecided"), (1, "smaller than the paper's"),
                           (1, "missing")):  # fmt: skip
        assert f"{count} {verdict}" in tally
    # a file with fewer columns: only those it has
    slim = claims_table(claims[["claim", "verdict"]])
    assert cells_of("th", slim.html) == ["claim (better > worse)", "verdict"]
    assert "claim (better > worse)" in repr(slim) and "A > B" in repr(slim)


def test_forest_plot_is_grouped_by_table_and_sized_for_its_rows(tmp_path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex
    from PIL import Image

    from thadcr.interfaces.notebook.figures import BODY_PX, COLUMN_PX, claims_forest_plot
    from thadcr.interfaces.notebook.results import verdict_colours

    claims = synthetic_claims()
    fig = claims_forest_plot(claims, titles={1: "first"})
    assert len(fig.axes) == 3  # tables 1, 4 and 5
    labels = [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes]
    assert labels == [["A > B", "A > C", "C > B"], ["K=8 > K=6"], ["x=1 > x=2", "x=1 > x=3"]]
    sizes = [t.get_fontsize() * fig.dpi / 72 for ax in fig.axes for t in ax.get_yticklabels()]
    assert sizes == pytest.approx([BODY_PX] * len(claims)), "row labels are not at the body text's size"
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["Table 1: first", "Table 4", "Table 5"]
    colours = verdict_colours(claims["verdict"])
    drawn = {to_hex(line.get_color()) for ax in fig.axes for line in ax.lines if line.get_marker() == "o"}
    assert drawn == {colours[v] for v in claims["verdict"] if v != "missing"}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "ours: smaller than the paper's" in legend and "paper's effect" in legend and "ours: missing" not in legend
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")  # as the notebook's inline backend does
    width, height = Image.open(buffer).size
    assert width <= COLUMN_PX, f"{width} px: shown scaled down in the {COLUMN_PX} px column"
    double = claims_forest_plot(pd_concat(claims))
    assert double.get_figheight() > fig.get_figheight() + 0.25 * len(claims)
    plt.close("all")


def pd_concat(claims):
    import pandas as pd

    return pd.concat([claims, claims.assign(claim=claims["claim"] + " again")], ignore_index=True)


def test_paper_and_learning_tables_for_a_reader() -> None:
    import pandas as pd

    from thadcr.interfaces.notebook.results import learning_table, paper_table, run_labels
    from thadcr.experiments.plan import METRICS

    rows = []
    for method, ours, std in (("DP (HTSAT)", 10.0, 0.41), ("THA", float("nan"), float("nan"))):
        for i, metric in enumerate(METRICS):
            rows.append({"table": 1, "method": method, "metric": metric, "ours_mean": ours + i, "ours_std": std,
                         "n_runs": 3, "paper_mean": 30.0 + i, "paper_std": float("nan"), "runs": "", "missing": ""})
    table = paper_table(pd.DataFrame(rows))
    head = table.html.split("</thead>")[0]
    assert re.findall(r'<th colspan="3" class="group">([^<]*)</th>', head) == ["Text-to-Audio", "Audio-to-Text"]
    assert re.findall(r'<th class="num">([^<]*)</th>', head) == ["R@1", "R@5", "R@10"] * 2
    assert '<th rowspan="2" class="num">R-sum</th>' in head
    assert re.findall(r'<th rowspan="2" class="method">([^<]*)</th>', table.html) == ["DP (HTSAT)", "THA"]
    assert '10.0 <span class="sd">±&nbsp;0.4</span>' in table.html and "<em>missing</em>" in table.html
    assert "75.0" in table.html  # the R-sum of ours: 10 + 11 + ... + 15
    assert "10.0 ± 0.4" in repr(table)  # the plain-text form keeps the paper layout's cells

    labels = run_labels("tiny")
    assert labels["audiocaps-DCR-htsat-K6-a0.01-b0.005-s0"] == ("audiocaps", "DCR, K=6, seed 0")
    assert labels["audiocaps-DP-resnet38-K8-a0.01-b0.005-s2"] == ("audiocaps", "DP (ResNet38), seed 2")
    assert labels["clotho-THA-htsat-K8-a0.01-b0.005-s0"] == ("clotho", "THA, seed 0")
    learning = pd.DataFrame({
        "run": ["clotho-THA-htsat-K8-a0.01-b0.005-s0", "somewhere-else-s0", "audiocaps-DCR-htsat-K6-a0.01-b0.005-s0"],
        "rsum": [150.0, 140.0, 130.0], "t2a_R10": [50.0, 40.0, 30.0], "t2a_chance": [6.67, 5.0, 5.0],
        "t2a_x_chance": [7.5, 8.0, 6.0], "a2t_R10": [30.0, 20.0, 25.0], "a2t_chance": [6.5, 4.91, 4.91],
        "a2t_x_chance": [4.6, 4.1, 5.1],
    })  # fmt: skip
    table = learning_table(learning, "tiny")
    names = re.findall(r'<td class="run" title="([^"]*)">([^<]*)</td>', table.html)
    assert names == [("somewhere-else-s0", "somewhere-else-s0"), ("clotho-THA-htsat-K8-a0.01-b0.005-s0", "THA, seed 0"),
                     ("audiocaps-DCR-htsat-K6-a0.01-b0.005-s0", "DCR, K=6, seed 0")]  # weakest first  # fmt: skip
    assert "clotho: text-to-audio 6.7 %, audio-to-text 6.5 %" in table.html
    assert not FILE_COLUMNS & set(cells_of("th", table.html))
