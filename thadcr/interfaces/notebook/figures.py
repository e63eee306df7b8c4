"""Helpers of the Figures page: figures as wide as the book's content column with text at the
body text's size (`figure_style`), the claims' forest plot (`claims_forest_plot`), and the Table 1
runs' training curves with a reading computed from their logs (`show_training_curves`)."""

from __future__ import annotations

from pathlib import Path

from thadcr.interfaces.notebook.method import table1_run_id
from thadcr.interfaces.notebook.results import missing_file, verdict_colours

COLUMN_PX = 676  # the book's content column at a 1280 px window (measured in Chromium)
FIGURE_DPI = 100
BODY_PX = 16  # the body text's size in the book's theme
BODY_PT = BODY_PX * 72 / FIGURE_DPI  # 11.52 pt: 16 px in a figure drawn at FIGURE_DPI and shown 1:1
COLUMN_INCHES = 6.5  # 650 px at FIGURE_DPI: with the inline backend's tight crop still within the column


def figure_style() -> None:
    """seaborn's white grid with text at the body text's size for figures ``COLUMN_INCHES`` wide
    drawn at ``FIGURE_DPI``: such a figure is shown at its own size in the content column at a
    1280 px window, so its labels read as the page's text does."""
    import seaborn as sns

    small = BODY_PT - 1.5
    sns.set_theme(style="whitegrid", rc={
        "figure.dpi": FIGURE_DPI, "savefig.dpi": FIGURE_DPI, "font.size": BODY_PT, "axes.titlesize": BODY_PT,
        "axes.labelsize": BODY_PT, "xtick.labelsize": small, "ytick.labelsize": small, "legend.fontsize": small,
        "legend.title_fontsize": small, "figure.titlesize": BODY_PT,
    })  # fmt: skip


def claims_forest_plot(claims, titles: dict | None = None):
    """Each claim's effect with its 95 % interval (ours, coloured by verdict, `verdict_colours`),
    the paper's effect as an open black diamond and zero as a line; one panel per paper table (titled
    from `titles`, default ``thadcr.experiments.plan.TABLE_TITLES``) on a common axis, the claims as row
    labels at the body text's size, the figure's height from its number of rows. Rows without an
    effect show the paper's only. Returns the Figure."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from thadcr.experiments.plan import TABLE_TITLES

    titles = TABLE_TITLES if titles is None else titles
    frame = claims.reset_index(drop=True)
    groups = list(frame.groupby("table", sort=False)) if "table" in frame else [(None, frame)]
    colours = verdict_colours(frame["verdict"].astype(str))
    row_in, head_in, foot_in = 0.3, 0.5, 1.25  # per claim; per table (its title); axis label and legend
    sizes = [len(rows) for _, rows in groups]
    fig, axes = plt.subplots(
        len(groups), 1, sharex=True, squeeze=False, dpi=FIGURE_DPI, layout="constrained",
        figsize=(COLUMN_INCHES, row_in * len(frame) + head_in * len(groups) + foot_in),
        gridspec_kw={"height_ratios": [n + 0.6 for n in sizes]},
    )  # fmt: skip
    axes, heads = axes[:, 0], []
    fig.get_layout_engine().set(h_pad=0.12)
    for ax, (table, rows) in zip(axes, groups):
        y = np.arange(len(rows))[::-1]  # first claim on top
        for yi, row in zip(y, rows.itertuples()):
            if pd.notna(row.effect):
                ax.errorbar(row.effect, yi, xerr=[[row.effect - row.ci_low], [row.ci_high - row.effect]], fmt="o",
                            color=colours[str(row.verdict)], markersize=6, capsize=3, linewidth=1.6)  # fmt: skip
        ax.scatter(rows["paper_effect"], y, marker="D", facecolors="white", edgecolors="black", s=36,
                   linewidths=1.4, zorder=3)  # fmt: skip
        ax.axvline(0.0, color="black", linewidth=0.9)
        ax.set_yticks(y, rows["claim"].astype(str), fontsize=BODY_PT)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.grid(axis="y", visible=False)
        title = "" if table is None else f"Table {table}" + (f": {titles[table]}" if table in titles else "")
        heads.append(ax.set_title(title, loc="left", fontsize=BODY_PT, fontweight="bold"))
    axes[-1].set_xlabel("R-sum difference, better - worse row (95 % interval)", fontsize=BODY_PT)
    axes[-1].tick_params(axis="x", labelsize=BODY_PT)
    shown = [v for v in colours if v in set(frame.dropna(subset=["effect"])["verdict"].astype(str))]
    handles = [plt.Line2D([], [], color=colours[v], marker="o", linestyle="", markersize=7, label=f"ours: {v}")
               for v in shown]  # fmt: skip
    handles.append(plt.Line2D([], [], color="black", markerfacecolor="white", marker="D", linestyle="", markersize=6,
                              markeredgewidth=1.4, label="paper's effect"))  # fmt: skip
    for ncols in range(min(len(handles), 3), 0, -1):  # as many legend columns as fit the figure's width
        legend = fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=BODY_PT,
                            frameon=False)  # fmt: skip
        fig.canvas.draw()  # lay out, then start each title at the figure's left edge, over the row labels
        if ncols == 1 or legend.get_window_extent().width <= fig.bbox.width:
            break
        legend.remove()
    fig.set_layout_engine("none")
    for ax, head in zip(axes, heads):
        box = ax.get_position()
        head.set_x(-(box.x0 - 0.01) / box.width)
    return fig


# ------------------------------------------------------------------ training curves
# a column of `training_logs` -> (its name over its panels, digits in the reading, y scale); the
# loss falls by more than ten times, so a log scale keeps its late epochs apart
TRAINING_CURVES = {"loss": ("training loss L", 2, "log"),
                   "rsum": ("validation R-sum (the six recalls added, %)", 1, "linear")}


def training_logs(root: Path, profile: str, seeds: int | None = None):
    """The ``log.csv`` of every Table 1 run under ``root/runs`` (AudioCaps, each method
    with its default settings, the seeds the profile's plan runs it with (``seeds``:
    `thadcr.experiments.plan.plan`'s), by `table1_run_id`) as one frame with
    the columns ``method`` (Table 1's row label), ``seed`` and ``rsum`` (the six
    validation recalls added; NaN where the log has no recalls), and a `missing_file`
    note for each log that is not there. Returns (frame, notes); the frame is None when
    no log is there."""
    import pandas as pd

    from thadcr.experiments.plan import METRICS, TABLE_ROWS, plan

    planned = {run.run_id for run in plan(profile, (1,), seeds)}
    recalls = [f"val_{metric}" for metric in METRICS]
    frames, notes = [], []
    for method, _ in TABLE_ROWS[1]:
        for seed in range(len(planned)):
            if table1_run_id(method, seed=seed) not in planned:  # the plan's seeds of this method only
                continue
            path = root / "runs" / table1_run_id(method, seed=seed) / "log.csv"
            if not path.is_file():
                notes.append(missing_file(path, profile))
                continue
            log = pd.read_csv(path)
            rsum = float("nan")
            if set(recalls) <= set(log.columns):
                rsum = log[recalls].sum(axis=1, min_count=len(recalls))
            frames.append(log.assign(method=method, seed=seed, rsum=rsum))
    curves = pd.concat(frames, ignore_index=True) if frames else None
    return curves, notes


def _curve_panels(block, logged, column: str, methods: list[str], scale: str, mean_label: str) -> None:
    """One panel per method in rows of three on one y scale (``scale``: "log" where every value
    is positive), each seed a thin grey line, the mean over the seeds a thick blue one."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

    columns = min(3, len(methods))
    axes = block.subplots(-(-len(methods) // columns), columns, sharex=True, sharey=True, squeeze=False)
    for ax, method in zip(axes.flat, methods):
        runs = logged[logged["method"] == method]
        if runs["seed"].nunique() > 1:
            for _, run in runs.groupby("seed"):
                ax.plot(run["epoch"], run[column], color="0.6", lw=1.0, marker="o", markersize=3,
                        label="each seed")  # fmt: skip
        mean = runs.groupby("epoch")[column].mean()
        ax.plot(mean.index, mean.to_numpy(), color="tab:blue", lw=2.2, marker="o", markersize=5, label=mean_label)
        ax.set_title(method, fontsize=BODY_PT)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(x=0.12, y=0.12)
    if scale == "log" and (logged[column] > 0).all():  # shared: one call sets every panel
        axes[0, 0].set_yscale("log")
        axes[0, 0].yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
        axes[0, 0].yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes[0, 0].yaxis.set_minor_locator(NullLocator())
    for ax in axes.flat[len(methods):]:
        ax.set_visible(False)
    for column_axes in axes.T:  # under the lowest panel of each column: the epochs
        lowest = [ax for ax in column_axes if ax.get_visible()][-1]
        lowest.xaxis.set_tick_params(labelbottom=True)
        lowest.set_xlabel("epoch", fontsize=BODY_PT)


def _one_epoch_panel(block, logged, column: str, methods: list[str], mean_label: str) -> None:
    """A quantity logged at one epoch only: one panel, the methods side by side, each seed a grey
    dot (spread a little sideways so that equal values stay visible) over their mean, a blue bar
    with a dot at its middle."""
    import numpy as np

    ax = block.subplots()
    for x, method in enumerate(methods):
        values = logged.loc[logged["method"] == method, column].to_numpy()
        if len(values):
            ax.plot([x - 0.24, x, x + 0.24], [values.mean()] * 3, color="tab:blue", lw=2.2, marker="o",
                    markersize=5, markevery=[1], label=mean_label, zorder=2)  # fmt: skip
        if len(values) > 1:
            ax.plot(x + np.linspace(-0.15, 0.15, len(values)), values, linestyle="", color="0.45", marker="o",
                    markersize=4, label="each seed", zorder=3)  # fmt: skip
    ax.set_xticks(range(len(methods)), [method.replace(" (", "\n(") for method in methods])
    ax.tick_params(axis="x", labelsize=BODY_PT)
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.margins(y=0.12)


def training_curves_figure(curves):
    """The curves of `training_logs`: a block of panels for each quantity of
    ``TRAINING_CURVES`` (training loss, validation R-sum), in it one panel per method in
    rows of three, all on one y scale (the loss's logarithmic); each seed a thin grey line,
    the mean over the method's seeds a thick blue one. A quantity logged at one epoch only
    (the tiny profile validates its last epoch alone) is one panel instead, the methods side
    by side, titled with that epoch. The legend is under the panels. ``COLUMN_INCHES``
    wide, text at the body text's size. Returns the Figure."""
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(curves["method"]))
    rows = -(-len(methods) // min(3, len(methods)))
    logged = {column: curves.dropna(subset=[column]) for column in TRAINING_CURVES}  # val_every may skip epochs
    checked = {column: sorted(set(frame["epoch"])) for column, frame in logged.items()}
    heights = [0.45 + (2.3 if len(checked[column]) <= 1 else 1.55 * rows) for column in TRAINING_CURVES]
    fig = plt.figure(figsize=(COLUMN_INCHES, 0.8 + sum(heights)), dpi=FIGURE_DPI, layout="constrained")
    blocks = fig.subfigures(len(TRAINING_CURVES), 1, hspace=0.04, height_ratios=heights)
    several = bool((curves.groupby("method")["seed"].nunique() > 1).any())
    mean_label = "mean over the seeds" if several else "one seed"
    for block, (column, (name, _, scale)) in zip(blocks, TRAINING_CURVES.items()):
        if len(checked[column]) > 1:
            block.suptitle(name, fontsize=BODY_PT, fontweight="bold")
            _curve_panels(block, logged[column], column, methods, scale, mean_label)
            continue
        when = f", epoch {int(checked[column][0])} only" if checked[column] else ": not logged"
        block.suptitle(f"{name}{when}", fontsize=BODY_PT, fontweight="bold")
        _one_epoch_panel(block, logged[column], column, methods, mean_label)
    shown = {}  # one legend entry a label
    for ax in fig.axes:
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels):
            shown.setdefault(label, handle)
    fig.legend(shown.values(), shown.keys(), loc="outside lower center",
               ncols=len(shown), frameon=False, fontsize=BODY_PT)
    return fig


def _directions(changes, digits: int) -> list[tuple[str, int]]:
    """(word, count) of the changes that fell, rose and did not change at ``digits``
    decimals, the most frequent first, the empty ones left out."""
    rounded = changes.round(digits)
    counts = {"fell": int((rounded < 0).sum()), "rose": int((rounded > 0).sum()),
              "did not change": int((rounded == 0).sum())}
    return sorted(((w, c) for w, c in counts.items() if c), key=lambda item: -item[1])


def _all(n: int, noun: str) -> str:
    """ "the one variant", "both variants", "all 6 variants"."""
    if n <= 2:
        return f"the one {noun}" if n == 1 else f"both {noun}s"
    return f"all {n} {noun}s"


def _listing(names: list[str]) -> str:
    """ "A", "A and B", "A, B and C"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _seeds_sentence(seeds) -> str:
    """What each variant's value averages: its seeds, grouped by their number."""
    if seeds.nunique() == 1:
        n = int(seeds.iloc[0])
        return "Each variant ran one seed." if n == 1 else f"Each variant's values are means over its {n} seeds."
    groups: dict[int, list[str]] = {}
    for method, n in seeds.items():
        groups.setdefault(int(n), []).append(method)
    said = "; ".join(f"{n} for {_listing(names)}" for n, names in sorted(groups.items(), reverse=True))
    return f"Each variant's values are means over its seeds: {said}."


def training_curves_sentence(curves) -> str:
    """A reading of `training_logs`, computed from it: how many epochs the runs logged
    (two epochs are two points: one change, nothing about convergence) and how many seeds
    each variant's values average; how each quantity of ``TRAINING_CURVES`` changed from
    the first logged epoch to the last, per method as the mean over its seeds, in how many
    single runs it changed that way and, over three or more epochs, how much of the change
    came in the first step; a quantity logged at one epoch only is given as that epoch's
    values (no change to read); and, with several seeds, how far apart the methods' mean
    validation R-sums and the seeds of one method are at the last epoch."""
    import numpy as np

    per_run = curves.groupby(["method", "seed"], sort=False)
    last = curves.loc[per_run["epoch"].idxmax()].set_index(["method", "seed"])
    epochs = per_run["epoch"].agg(["min", "max", "size"])
    seeds = curves.groupby("method", sort=False)["seed"].nunique()
    methods = list(seeds.index)
    if epochs["size"].max() == 1:
        return ("Every run's `log.csv` holds a single epoch: the curves are single "
                "points and show no change.")
    same = all(epochs[key].nunique() == 1 for key in ("min", "max", "size"))
    start, end, count = (int(epochs[key].iloc[0]) for key in ("min", "max", "size"))
    if same:
        head = f"Every run's `log.csv` holds {count} epochs"
        if count == 2:
            head += (", so each curve is two points: one change, which says nothing "
                     "about whether training had converged.")
        else:
            head += (f" (epochs {start} to {end}); the curves say nothing about what "
                     "later epochs would show.")
        span = f"From epoch {start} to epoch {end}"
    else:
        head = (f"The runs' `log.csv` files hold {epochs['size'].min()} to "
                f"{epochs['size'].max()} epochs; the curves say nothing about what "
                "later epochs would show.")
        span = "From each run's first logged epoch to its last"
    sentences = [head, _seeds_sentence(seeds)]
    for column, (name, digits, _) in TRAINING_CURVES.items():
        logged = curves.dropna(subset=[column])  # validation may skip epochs (val_every)
        label = name.split(" (")[0]
        checked = sorted(set(logged["epoch"]))
        if len(checked) == 1:
            means = logged.groupby("method", sort=False)[column].mean()
            values = "; ".join(f"{m}: {v:.{digits}f}" for m, v in means.items())
            sentences.append(f"The {label} was measured at epoch {int(checked[0])} only, one value "
                             f"per run, so it shows no change over training ({values}).")
            continue
        if not checked:
            continue
        ends = logged.groupby(["method", "seed"], sort=False)["epoch"]
        begin = logged.loc[ends.idxmin()].set_index(["method", "seed"])[column]
        finish = logged.loc[ends.idxmax()].set_index(["method", "seed"])[column]
        runs = finish - begin  # one change a run
        a = begin.groupby(level="method", sort=False).mean()
        b = finish.groupby(level="method", sort=False).mean()
        shown = [m for m in methods if np.isfinite(a[m] + b[m])]
        if not shown:
            continue
        (word, n_word), *rest = _directions(b[shown] - a[shown], digits)
        if rest:
            said = f"{word} in {n_word} of {len(shown)} variants and " + " and ".join(
                f"{w} in {c}" for w, c in rest)
        else:
            said = f"{word} in {_all(len(shown), 'variant')}"
        if len(runs) > len(shown):  # several seeds: the single runs too
            agree, total = dict(_directions(runs, digits)).get(word, 0), len(runs)
            in_runs = (_all(total, "run") if agree == total
                       else f"{agree} of the {total} runs")
            said += f"; it {word} in {in_runs}" if rest else f" and in {in_runs}"
        values = "; ".join(f"{m}: {a[m]:.{digits}f} to {b[m]:.{digits}f}"
                           for m in shown)
        when = "" if len(checked) == curves["epoch"].nunique() else (
            f", measured at epochs {', '.join(str(int(e)) for e in checked)},")
        sentence = f"{span} the {label}{when} {said} ({values})"
        if same and len(checked) > 2 and not rest and word != "did not change":
            mean = logged.groupby(["method", "epoch"], sort=False)[column].mean()
            shares = [100 * (mean[m, checked[1]] - mean[m, checked[0]]) / (b[m] - a[m]) for m in shown]
            low, high = f"{min(shares):.0f}", f"{max(shares):.0f}"
            sentence += (f"; {low if low == high else f'{low} to {high}'} % of each variant's "
                         f"{'fall' if word == 'fell' else 'rise'} came between epochs "
                         f"{int(checked[0])} and {int(checked[1])}")
        sentences.append(sentence + ".")
    final = last["rsum"].dropna()
    means = final.groupby(level="method", sort=False).mean()
    spread = final.groupby(level="method", sort=False).agg(lambda v: v.max() - v.min())
    if len(means) > 1 and (seeds > 1).any():
        at = f"epoch {end}" if same else "the last epoch"
        sentences.append(
            f"At {at} the means of the variants' validation R-sums span "
            f"{means.max() - means.min():.1f} points, from {means.min():.1f} ({means.idxmin()}) to "
            f"{means.max():.1f} ({means.idxmax()}), and the seeds of one variant lie up to "
            f"{spread.max():.1f} points apart ({spread.idxmax()}). These are validation scores; "
            "the Tables page compares the variants on the test set, with intervals.")
    return " ".join(sentences)


def show_training_curves(root: Path, profile: str, seeds: int | None = None) -> None:
    """`training_curves_figure` and `training_curves_sentence` of the Table 1 runs'
    ``log.csv`` files (`training_logs`), after a note for each log that is missing."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    curves, notes = training_logs(root, profile, seeds)
    for note in notes:
        display(note)
    if curves is None:
        return
    fig = training_curves_figure(curves)
    display(fig)
    plt.close(fig)
    display(Markdown(training_curves_sentence(curves)))
