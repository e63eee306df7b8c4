"""The committed tiny-profile results: repeatable bit for bit, made with the plan's settings, and
the source of every figure the README, the Experiments page and the power notes quote.

The re-trained run is the Clotho-like DP seed 0, the cheapest run of the plan. The tiny profile
runs in portable numerics (`thadcr.numerics`), so the same run gives the same bits on any x86-64
CPU with AVX2: the comparison is exact, with no tolerance.
"""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from thadcr.run import numerics_trace

from thadcr.experiments.plan import check_not_stale, is_complete, plan
from thadcr.experiments.claims import pooled_seed_sd
from thadcr.config import from_dict
from thadcr.run.train import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "tiny"
RUNS = RESULTS / "runs"
RUN = RUNS / "clotho-DP-htsat-K8-a0.01-b0.005-s0"


def _metrics(run_id: str) -> dict:
    return json.loads((RUNS / run_id / "metrics.json").read_text())


@pytest.mark.slow
def test_one_committed_tiny_run_reproduces_exactly(tmp_path, monkeypatch):
    committed = json.loads((RUN / "metrics.json").read_text())
    config = from_dict(committed["config"])
    assert config.numerics == "portable"
    if not (ROOT / config.data_root).is_dir():
        pytest.fail(f"{ROOT / config.data_root} is missing: build the embedded data set first (thadcr data build)")
    monkeypatch.chdir(ROOT)
    again = train(config, tmp_path / "again", progress=False)
    assert again["test"] == committed["test"]  # every recall and mAP, exactly
    assert again["best_epoch"] == committed["best_epoch"]
    ranks, committed_ranks = np.load(tmp_path / "again" / "test_ranks.npz"), np.load(RUN / "test_ranks.npz")
    assert sorted(ranks.files) == sorted(committed_ranks.files)
    for name in ranks.files:
        assert np.array_equal(ranks[name], committed_ranks[name]), name


@pytest.mark.slow
def test_the_reference_traces_repeat_here(tmp_path):
    """results/tiny/numerics/trace-*.jsonl (one per machine it was made on, the CPU in its header):
    this machine's first 3 training steps of the committed-run test's run have the same fingerprint
    at every module, gradient and parameter, and call no vendor-dispatched torch operation."""
    references = sorted((RESULTS / "numerics").glob("trace-*.jsonl"))
    assert references, "no reference trace: make one with `thadcr numerics trace --out results/tiny/numerics/trace-CPU.jsonl`"
    here = tmp_path / "here.jsonl"
    numerics_trace.trace(RUN, here, steps=3)
    for reference in references:
        header, events = numerics_trace.read(reference)
        assert header["numerics"]["mode"] == "portable" and header["numerics"]["cpu"]["vendor"], reference.name
        assert events[-1]["kind"] == "vendor_dispatched_calls" and events[-1]["sha"] == {}, reference.name
        assert numerics_trace.compare(reference, here) is None, numerics_trace.describe_difference(reference, here)


def test_committed_runs_were_made_with_the_plans_settings_in_portable_numerics():
    runs = plan("tiny")
    assert all(is_complete(RUNS / run.run_id) for run in runs)
    check_not_stale(runs, RUNS)  # raises, listing the keys, if a run's config differs
    for run in runs:
        numerics = _metrics(run.run_id)["numerics"]
        assert numerics["mode"] == "portable" and numerics["torch_threads"] == 1, run.run_id
        assert numerics["aten_cpu_capability"] == "AVX2" and numerics["mkl_branch"] in ("COMPATIBLE", None), run.run_id
        assert not numerics["mkldnn"] and not numerics["nnpack"], run.run_id


CLAIM_LINE = re.compile(
    r"Table (?P<table>\d), `(?P<claim>[^`]+)`: ours (?P<effect>[+-]?\d+\.\d) \(95 % interval "
    r"(?P<lo>[+-]?\d+\.\d) to (?P<hi>[+-]?\d+\.\d)\), \*\*(?P<verdict>[^*]+)\*\*; paper (?P<paper>[+-]?\d+\.\d)"
)


def test_the_experiments_page_states_every_claim_as_claims_csv_has_it():
    """Claim by claim, the Experiments page's effect, interval, verdict and the paper's effect are
    those of results/tiny/tables/claims.csv (rounded to 0.1): the text cannot drift from the file."""
    page = (ROOT / "book" / "experiments.md").read_text()
    stated = {(int(m["table"]), m["claim"]): m for m in CLAIM_LINE.finditer(page)}
    claims = pd.read_csv(RESULTS / "tables" / "claims.csv")
    assert len(stated) == len(claims), f"the page states {len(stated)} claims, claims.csv has {len(claims)}"
    for row in claims.itertuples():
        line = stated[(row.table, row.claim)]
        for key, value in (("effect", row.effect), ("lo", row.ci_low), ("hi", row.ci_high),
                           ("paper", row.paper_effect)):
            assert float(line[key]) == round(value, 1), (row.claim, key)
        assert line["verdict"] == row.verdict, row.claim


def _learning() -> pd.DataFrame:
    return pd.read_csv(RESULTS / "tables" / "learning.csv").set_index("run")


README = (ROOT / "README.md").read_text()
EXPERIMENTS = (ROOT / "book" / "experiments.md").read_text()
NUMBER = r"(\d+(?:\.\d+)?)"


def stated(text: str, pattern: str) -> list[float]:
    """The numbers a page states where `pattern` (a regex with NUMBER groups) matches it."""
    match = re.search(pattern.replace("#", NUMBER), text)
    assert match, f"no text matches {pattern!r}: the page no longer states this figure"
    return [float(group) for group in match.groups()]


def test_run_figures_of_the_readme_and_the_experiments_page():
    """The run figures the README and the Experiments page state, read from the pages and
    recomputed from the committed files (rounded as stated)."""
    learning = _learning()
    both = int(((learning.t2a_x_chance >= 3) & (learning.a2t_x_chance >= 3)).sum())
    assert len(learning) == 110
    ranges = [round(learning[f"{d}_x_chance"].agg(f), 1) for d in ("t2a", "a2t") for f in ("min", "max")]
    assert stated(README, r"test R@10 is #-#x chance text-to-audio and #-#x chance audio-to-text") == ranges
    assert stated(README, r"\(# of the 110 runs at least 3x both ways\), mean R-sum #") == [both, round(learning.rsum.mean(), 1)]
    pooled, per_setting = pooled_seed_sd(learning.rsum.to_dict(), plan("tiny"))
    spread = [round(pooled, 1), round(min(per_setting.values()), 1), round(max(per_setting.values()), 1)]
    assert len(per_setting) == 3  # Table 1's rows without THA run 8 seeds
    assert stated(README, r"# points pooled over Table 1's three rows with 8 seeds \(# to # per row\)") == spread
    assert stated(EXPERIMENTS, r"(?s)seed-to-seed standard deviation of test R-sum is\s+# points \(per row from #") == spread[:2]
    seeds = [learning.rsum[f"audiocaps-DP-htsat-K8-a0.01-b0.005-s{s}"] for s in range(8)]
    assert stated(EXPERIMENTS, r"(?s)eight DP \(HTS-AT\) seeds\s+score # to #") == [round(min(seeds), 1), round(max(seeds), 1)]

    claims = pd.read_csv(RESULTS / "tables" / "claims.csv")
    widths = claims.ci_high - claims.ci_low
    width_range = [round(widths.min()), round(widths.max())]
    paper_range = [round(claims.paper_effect.min(), 1), round(claims.paper_effect.max(), 1)]
    counts = [int((claims.verdict == v).sum()) for v in ("holds", "contradicted", "smaller than the paper's", "undecided")]
    assert stated(README, r"test clips; # to # R-sum points wide") == width_range
    assert stated(README, r"# \*\*hold\*\*, # \*\*contradicted\*\*, # \*\*smaller than the paper's\*\*, # "
                  r"\*\*undecided\*\*") == counts
    assert stated(README, r"the paper's effects are # to # points") == paper_range
    assert stated(EXPERIMENTS, r"intervals are # to # R-sum points wide \(median #\), while the paper's effects are "
                  r"# to #") == width_range + [round(widths.median(), 1)] + paper_range
    assert stated(EXPERIMENTS, r"agree in sign with the paper's in # of 25") == [(claims.effect * claims.paper_effect > 0).sum()]
    assert stated(EXPERIMENTS, r"# \*\*hold\*\*, # \*\*contradicted\*\*, # \*\*smaller than the paper's\*\*, "
                  r"# \*\*undecided\*\*") == counts


def test_time_figures_of_the_readme_and_the_experiments_page():
    summary = json.loads((RESULTS / "summary.json").read_text())
    assert summary["machine"]["cpu_count"] == 2 and summary["runs"]["complete"] == 110
    assert [call["jobs"] for call in summary["wall_time_s"]["execute_calls"]] == [2, 2, 2]  # stopped once, the rest, Tables 4-5 seeds 4-7
    elapsed = round(summary["wall_time_s"]["execute_elapsed"] / 60, 1)
    third = round(summary["wall_time_s"]["execute_calls"][2]["elapsed_s"] / 60, 1)
    assert stated(README, r"ran their seeds 4-7 in # min") == [third]
    assert stated(EXPERIMENTS, r"seeds 4-7 of Tables 4-5 \(# minutes\)") == [third]
    assert stated(POWER_NOTES, r"clean tree at f41a39c, # minutes") == [third]
    total = round(summary["wall_time_s"]["sum_of_runs"] / 60, 1)

    def times(pattern):
        found = [_metrics(p.parent.name)["wall_time_s"] for p in RUNS.glob(f"{pattern}/metrics.json")]
        return [round(min(found)), round(max(found))]

    assert stated(README, r"\| # min with `--jobs 2` \(sum of the runs' times # min\)") == [elapsed, total]
    assert stated(README, r"runs take #-# s each with two at a time \(the THA rows #-# s\)") == (
        times("*") + times("*-THA*"))
    assert stated(EXPERIMENTS, r"(?s)The plan took # minutes with `--jobs 2` on 2 cores \(the runs' own times add up to\s+#") == [
        elapsed, total]
    assert stated(EXPERIMENTS, r"(?s)a run took #-# s, the THA rows\s+#-# s") == times("*") + times("*-THA*")


def test_committed_run_notebooks_log_lines_not_progress_bars():
    """Papermill runs log one line per epoch (progress="lines"); a progress bar's every update
    once made the committed notebooks 8.7 MB, and their figures 4.4 MB. Now they hold a few lines each."""
    notebooks = sorted(RUNS.glob("*/run.ipynb"))
    assert len(notebooks) == 110
    for path in notebooks:
        text = path.read_text()
        assert "%|" not in text and "it/s]" not in text, path.parent.name
        assert '"image/' not in text, path.parent.name  # execution.drop_figures
    assert sum(path.stat().st_size for path in notebooks) < 3.5e6


POWER_NOTES = (ROOT / "docs" / "decisions" / "power.md").read_text()
COUNT_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}


def _claims() -> pd.DataFrame:
    claims = pd.read_csv(RESULTS / "tables" / "claims.csv")
    return claims.assign(half_width=(claims.ci_high - claims.ci_low) / 2)


def _item(text: str, start: str) -> str:
    """The list item of `text` that starts with `start`, up to the next item or paragraph."""
    match = re.search(r"^- " + re.escape(start) + r".*?(?=^- |\n\n)", text, re.S | re.M)
    assert match, f"no list item starts with {start!r}: the page no longer states it"
    return match.group(0)


def _named(item: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", item))


def _range(half_widths: pd.Series) -> list[float]:
    return [round(half_widths.min(), 1), round(half_widths.max(), 1)]


def test_the_experiments_page_reads_the_verdicts_as_claims_csv_has_them():
    """The items under "What the runs say": the claims each names are those with its verdict, and
    its counts, effect and half-widths are those of results/tiny/tables/claims.csv."""
    claims = _claims()
    tha = claims.claim.str.contains("THA")

    def with_verdict(verdict: str) -> pd.DataFrame:
        return claims[claims.verdict == verdict]

    contradicted = _item(EXPERIMENTS, "**Where the miniature decides")
    assert _named(contradicted) == set(with_verdict("contradicted").claim)
    assert not tha[claims.verdict == "contradicted"].any()  # "The claims without THA ..."
    word = re.search(r"and (\w+) are contradicted", contradicted)[1]
    assert COUNT_WORDS[word] == len(with_verdict("contradicted"))

    word = re.search(r"^- \*\*(\w+) claims hold:\*\*", EXPERIMENTS, re.M)[1]
    assert COUNT_WORDS[word.lower()] == len(with_verdict("holds"))
    holds = _item(EXPERIMENTS, f"**{word} claims hold:**")
    assert _named(holds) == set(with_verdict("holds").claim)
    adding_la = claims.set_index("claim").effect["DP+LD+LA > DP+LD"]
    assert stated(holds, r"adding L_A: \+# points") == [round(adding_la, 1)]

    others = _item(EXPERIMENTS, "**The other THA claims are undecided or smaller than the paper's**")
    not_held = claims[tha & (claims.verdict != "holds")]
    assert set(not_held.verdict) <= {"undecided", "smaller than the paper's"}
    assert set(claims[tha & (claims.verdict == "holds")].claim) <= _named(holds)
    assert stated(others, r"half-widths # to #") == _range(claims[tha].half_width)

    ablations = _item(EXPERIMENTS, "**Tables 4-5**")
    later = claims[claims.table >= 4]
    assert _named(ablations) == set(later[later.verdict != "undecided"].claim)
    assert stated(ablations, r"half-widths # to #") == _range(later.half_width)


def test_the_power_notes_obtained_half_widths_are_claims_csv():
    """The power notes' table of obtained half-widths by kind of claim, and the goals they meet,
    recomputed from results/tiny/tables/claims.csv."""
    claims = _claims()
    tha = claims.claim.str.contains("THA")
    resnet = claims.claim.str.contains("ResNet38") & ~tha
    kinds = {
        "HTS-AT vs ResNet38": claims[resnet],
        "THA claims": claims[tha],
        "without THA or ResNet38": claims[~tha & ~resnet & (claims.table <= 3)],
        "K, alpha, beta": claims[claims.table >= 4],
    }
    assert sum(len(kind) for kind in kinds.values()) == len(claims)
    for start, kind in kinds.items():
        row = re.search(r"^\| " + re.escape(start) + r"[^|]*\| (\d+) \|[^|]+\| " + r"#-# \(#\) \|$".replace("#", NUMBER),
                        POWER_NOTES, re.M)
        assert row, f"the power notes no longer state the half-widths of {start!r}"
        widths = kind.half_width
        assert [float(x) for x in row.groups()] == [len(kind), *_range(widths), round(widths.median(), 1)], start
    rows_without_tha = kinds["without THA or ResNet38"]
    assert stated(POWER_NOTES, r"claims without THA \(half-widths #-#") == _range(rows_without_tha.half_width)
    over_six = rows_without_tha[rows_without_tha.half_width > 6]
    assert [(r.claim, r.dataset) for r in over_six.itertuples()] == [("DCR > DP (HTSAT)", "clotho")]
    ablations = kinds["K, alpha, beta"]
    word = re.search(r"Tables 4-5 at most 8 in (\w+) of six", POWER_NOTES)[1]
    assert COUNT_WORDS[word] == int((ablations.half_width <= 8).sum()) and len(ablations) == 6


def test_the_power_notes_frozen_against_finetuned_table_is_finetune_json():
    """Every cell of the power notes' frozen-against-fine-tuned table, and the ratio the text
    draws from it, formatted from results/tiny/pilot/finetune.json (the finetune pilot's output)."""
    payload = json.loads((RESULTS / "pilot" / "finetune.json").read_text())
    frozen, finetuned = payload["sides"]["frozen"], payload["sides"]["finetuned"]

    def rsums(side: dict, name: str) -> str:
        values = side["validation_rsum"][name]
        return (" / ".join(f"{v:.1f}" for v in values)
                + f" (mean {np.mean(values):.1f}, SD {np.std(values, ddof=1):.1f})")

    def both(cell) -> str:
        return f"| {cell(frozen)} | {cell(finetuned)} |"

    def minutes(side: dict) -> str:
        dp, dcr = (side["minutes_per_run"][name] for name in (side["worse"], side["better"]))
        return f"{dp:.2f} / {dcr:.2f}"

    rows = [
        f"| DP, seeds 0-3 | {rsums(frozen, 'DP')} | {rsums(finetuned, 'DP-finetuned')} |",
        f"| DCR, seeds 0-3 | {rsums(frozen, 'DCR')} | {rsums(finetuned, 'DCR-finetuned')} |",
        "| DCR - DP per seed " + both(lambda side: " / ".join(f"{d:.1f}" for d in side["paired_differences"])),
        "| SD of the paired differences " + both(lambda side: f"{side['sd_paired_difference']:.1f}"),
        "| sigma_u^2 / sigma_v^2 " + both(lambda side: f"{side['sigma_u2']:.1f} / {side['sigma_v2']:.0f}"),
        "| minutes per run (DP / DCR) " + both(minutes),
        "| seed-mean variance x minutes, per paired seed " + both(lambda side: f"{side['seed_variance_times_minutes']:.1f}"),
    ]
    for row in rows:
        assert row in POWER_NOTES, f"the power notes do not state this row of finetune.json: {row}"
    assert frozen["better"] == "DCR" and finetuned["better"] == "DCR-finetuned"
    assert all(side["pilot_seeds"] == 4 and side["pilot_clips"] == 400 for side in (frozen, finetuned))
    ratio = payload["power_per_minute_ratio_frozen_over_finetuned"]
    assert stated(POWER_NOTES, r"the frozen runs give \*\*# times\*\*") == [round(ratio, 1)]
    assert stated(POWER_NOTES, r"\(SD # against #\)") == [round(frozen["sd_paired_difference"], 1),
                                                           round(finetuned["sd_paired_difference"], 1)]
    per_run = [np.std(side["validation_rsum"][name], ddof=1)
               for side, name in ((finetuned, "DP-finetuned"), (finetuned, "DCR-finetuned"), (frozen, "DP"), (frozen, "DCR"))]
    assert stated(EXPERIMENTS, r"R-sums by SDs of # and # across 4 seeds,\s+the frozen heads by # and #") == [
        round(sd, 1) for sd in per_run]
    assert stated(EXPERIMENTS, r"\(SD #\s+against #\) at # times the minutes") == [
        round(finetuned["sd_paired_difference"], 1), round(frozen["sd_paired_difference"], 1),
        round(finetuned["minutes_per_paired_seed"] / frozen["minutes_per_paired_seed"])]
    assert stated(POWER_NOTES, r"a paired seed costs\s+# times fewer minutes") == [
        round(finetuned["minutes_per_paired_seed"] / frozen["minutes_per_paired_seed"])]
    assert stated(EXPERIMENTS, r"the frozen runs gave # times the power") == [round(ratio, 1)]
    assert stated(README, r"SD of the paired differences # frozen \(# epochs\) against # fine-tuned \(# epochs\), at # "
                  r"against # minutes per paired seed: # times the power") == [
        round(frozen["sd_paired_difference"], 1), frozen["epochs"], round(finetuned["sd_paired_difference"], 1),
        finetuned["epochs"], round(frozen["minutes_per_paired_seed"], 2), round(finetuned["minutes_per_paired_seed"], 2),
        round(ratio, 1)]
    model_notes = (ROOT / "docs" / "decisions" / "model.md").read_text()
    assert stated(model_notes, r"\(SD # against #\) at # times fewer minutes, # times") == [
        round(frozen["sd_paired_difference"], 1), round(finetuned["sd_paired_difference"], 1),
        round(finetuned["minutes_per_paired_seed"] / frozen["minutes_per_paired_seed"]), round(ratio, 1)]


def test_the_power_notes_limits_of_the_goals_out_of_reach():
    """The figures of the power notes' "goals out of reach" section, from the committed runs,
    the pilot's variance.json and claims' pooled seed SD."""
    from scipy.stats import chi2
    from scipy.stats import t as student_t

    from thadcr.experiments.power import VarianceParts, half_width

    section = POWER_NOTES[POWER_NOTES.index("## The goals out of reach"):]
    learning = _learning()
    minutes = {key: [] for key in ("tha", "tables12", "tables35")}
    for run in plan("tiny"):
        wall = _metrics(run.run_id)["wall_time_s"]
        key = "tha" if run.variant.startswith("THA") else "tables12" if min(run.tables) <= 2 else "tables35"
        minutes[key].append(wall)
    tha = minutes["tha"]
    assert stated(section, r"six THA runs took #-# s each") == [round(min(tha)), round(max(tha))]
    total = sum(map(sum, minutes.values())) / 60
    assert stated(section, r"# of the plan's # run-minutes") == [round(sum(tha) / 60, 1), round(total, 1)]
    more = 7 * len(tha) * np.mean(tha) / 60
    assert stated(section, r"(?s)are 42\s+more runs, about # run-minutes: about # minutes") == [round(more), round(more / 2)]
    assert stated(EXPERIMENTS, r"8 THA seeds would take about # more minutes") == [round(more / 2)]
    assert stated(section, r"(?s)the 6 THA runs # run-minutes,\s+the 40 runs of\s+Tables 1-2 without THA #,\s+"
                  r"the 64 runs of\s+Tables 3-5 #") == [round(sum(v) / 60, 1) for v in minutes.values()]
    assert [len(v) for v in minutes.values()] == [6, 40, 64]

    pair = next(p for p in json.loads((RESULTS / "pilot" / "variance.json").read_text())["pairs"]
                if p["worse"] == "DP-resnet38")
    parts = VarianceParts(test=pair["sigma_a2"], seed=pair["sigma_u2"], interaction=pair["sigma_v2"],
                          effect=pair["pilot_effect"], seeds=pair["pilot_seeds"], clips=pair["pilot_clips"])
    assert stated(section, r"sigma_a\^2 = # per clip") == [round(pair["sigma_a2"])]
    assert stated(section, r"# points; 16 seeds and 4,000 test clips\s+would predict #") == [
        round(1.96 * np.sqrt(pair["sigma_a2"] / 2000), 1), round(half_width(parts, 16, 4000), 1)]

    assert stated(EXPERIMENTS, r"(?s)it alone keeps\s+the half-width above # points") == [
        round(1.96 * np.sqrt(pair["sigma_a2"] / 2000), 1)]
    by_claim = _claims().set_index(["claim", "dataset"])
    dcr, audiocaps = (by_claim.loc[("DCR > DP (HTSAT)", dataset)] for dataset in ("clotho", "audiocaps"))
    assert stated(section, r"\*\*A half-width of 6 for `DCR > DP \(HTSAT\)` on Clotho\*\* \(#\)") == [round(dcr.half_width, 1)]
    assert stated(section, r"(?s)by an SD of # \(on AudioCaps #;.*?leave a standard error of # \(test sampling alone #\)") == [
        round(dcr.seed_sd, 1), round(audiocaps.seed_sd, 1), round(dcr.sd, 1), round(dcr.bootstrap_sd, 1)]

    def half_width_with(seeds: int) -> float:  # the claim's interval rule with the seed part of S seeds (df S - 1)
        return student_t.ppf(0.975, seeds - 1) * np.sqrt(dcr.seed_sd**2 / seeds + dcr.bootstrap_sd**2)

    needed = next(s for s in range(2, 100) if half_width_with(s) <= 6)
    assert stated(section, r"About # seeds of both rows\s+would reach 6") == [needed]
    pooled, per_setting = pooled_seed_sd(learning.rsum.to_dict(), plan("tiny"))
    df = 7 * len(per_setting)
    low, high = (pooled * np.sqrt(df / chi2.ppf(q, df)) for q in (0.975, 0.025))
    assert stated(section, r"(?s)# was obtained over 3 rows x 8 seeds, # degrees\s+of freedom; "
                  r"its 95 % interval \(chi-square\) is # to #") == [round(pooled, 1), df, round(low, 1), round(high, 1)]
    assert stated(README, r"its 95 % interval \(# to #\) holds both") == [round(low, 1), round(high, 1)]
