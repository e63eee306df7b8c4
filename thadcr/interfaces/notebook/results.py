"""Helpers of the Tables page, which reads as a report of the files `thadcr reproduce` writes:
where the results are (`results_folder`, `missing_file`), the claims table with its verdict colours
and tally (`show_claims`), the run summary, Tables 1-5 in the paper's layout (`show_paper_tables`),
the seed spread and how far above chance the runs learned (`show_learning`); each table as HTML that
fits the book's content column (`Table`)."""

from __future__ import annotations

from pathlib import Path

# The Tables and Figures pages call these in one line each, with their code folded: the pages read
# as a report of the files `thadcr reproduce` writes, and everything they show comes from those
# files (docs/decisions/book.md, "The Experiments pages read as a report").
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
    from thadcr.experiments.plan import REPO_ROOT

    return (Path(results_dir) if results_dir else REPO_ROOT / "results") / profile


def missing_file(path: Path, profile: str, why: str = ""):
    """A Markdown note naming a missing results file and the command that writes it."""
    from IPython.display import Markdown

    from thadcr.experiments.plan import REPO_ROOT

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
    `titles`, default ``thadcr.experiments.plan.TABLE_TITLES``), no index, the columns of
    ``CLAIM_HEADERS`` that the file has (``ci_low`` and ``ci_high`` as one "95 % interval"), each
    verdict with its colour, and the ``basis`` texts (where the paper makes the claim) as lettered
    footnotes. Columns the page does not show are named below the table."""
    import html
    import string

    import pandas as pd

    from thadcr.experiments.plan import TABLE_TITLES

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
    """One table CSV (``tables/table<N>.csv``) in the paper's layout (`thadcr.experiments.tables.paper_layout`:
    a method's two rows, ours and the paper's; text-to-audio and audio-to-text R@1/5/10; R-sum),
    as HTML with the method names as row headers and each "± SD" set smaller after its mean."""
    import html

    from thadcr.experiments.tables import paper_layout

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

    from thadcr.experiments.plan import TABLE_TITLES, TABLES

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
    (`thadcr.experiments.claims.pooled_seed_sd`, from ``learning.csv``), and each setting's, as a sentence."""
    from thadcr.experiments.claims import pooled_seed_sd
    from thadcr.experiments.plan import plan

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
    from thadcr.experiments.plan import TABLE_ROWS, plan

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
