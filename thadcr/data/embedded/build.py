"""Building the flavours ``audiocaps``, ``clotho`` and ``labels`` of the embedded data set.

:func:`build` fetches the packages, takes the inventory, plans and renders every flavour's
scenes and writes them in the Clotho v2 layout with a README (sources, licences) and
``manifest.json`` (sha256 of every file); a flavour whose manifest matches the parameters (the
code of this package included) is kept, a partial build of the same parameters is finished.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from thadcr import numerics, portable
from thadcr.data.readers import CLOTHO_FOLDERS
from thadcr.data.embedded.inventory import (
    CLASSES_TABLE,
    SOURCES_TABLE,
    Recording,
    assign_splits,
    inventory,
    load_classes,
    load_recordings,
)
from thadcr.data.embedded.packages import EmbeddedDataError, fetch_packages, package_version
from thadcr.data.embedded.scenes import N_CAPTIONS, plan_scene, render_scene, scene_captions
from thadcr.files import atomic_write, sha256, sha256_file

FLAVOURS = ("audiocaps", "clotho", "labels")
SPLITS = tuple(CLOTHO_FOLDERS.values())  # development, validation, evaluation: the Clotho folders of train, val, test
DEFAULT_SIZES = {"audiocaps": (3600, 400, 2000), "clotho": (1200, 400, 2000)}  # (train, val, test) clips: val 2, test 10 folds of 200


def build(out_dir: str | Path = "data/embedded", flavour: str = "all", packages_dir: str | Path | None = None,
          seed: int = 0, n_train: int | None = None, n_val: int | None = None, n_test: int | None = None,
          clip_seconds: float = 5.0, sample_rate: int = 32000, progress: bool = True) -> dict:
    """Build (or finish, or confirm up to date) the embedded data set; returns a summary dict.

    ``flavour``: "audiocaps" (one caption per development clip), "clotho" (5 per clip),
    "labels" (single recordings with the packages' own text) or "all". ``n_train/n_val/n_test``
    override the clip counts of the scene flavours (defaults in DEFAULT_SIZES).
    ``packages_dir`` defaults to ``<out_dir>/../packages``. Each flavour folder is skipped when
    its manifest matches the parameters; a partial build of the same parameters is finished.
    Runs in portable numerics (`thadcr.numerics`), so the clips are the same bits on any x86-64 CPU.
    """
    numerics.apply("portable")  # resampling and filtering give the same samples on every x86-64 CPU
    started = time.perf_counter()
    out_dir = Path(out_dir)
    flavours = FLAVOURS if flavour == "all" else (flavour,)
    if any(f not in FLAVOURS for f in flavours):
        raise EmbeddedDataError(f"unknown flavour {flavour!r}; use one of {', '.join(FLAVOURS + ('all',))}")
    if clip_seconds <= 0 or sample_rate <= 0:
        raise EmbeddedDataError(f"clip_seconds ({clip_seconds}) and sample_rate ({sample_rate}) must be positive")
    packages_dir = Path(packages_dir) if packages_dir is not None else out_dir.parent / "packages"
    trees = fetch_packages(packages_dir, progress)
    versions = {p: package_version(t, p) for p, t in trees.items()}
    modules = sorted(Path(__file__).parent.glob("*.py"))  # every module of this package, by name
    sources = (*modules, Path(portable.__file__), SOURCES_TABLE, CLASSES_TABLE)
    code = {t.name: sha256_file(t) for t in sources}  # any change rebuilds
    summary = {"out_dir": str(out_dir), "packages_dir": str(packages_dir), "packages": versions, "flavours": {}}
    params = {}
    for name in flavours:
        sizes = dict(zip(SPLITS, DEFAULT_SIZES.get(name, (0, 0, 0))))
        for split, n in zip(SPLITS, (n_train, n_val, n_test)):
            if n is not None and name != "labels":
                sizes[split] = int(n)
        params[name] = {"flavour": name, "seed": seed, "sizes": sizes, "clip_seconds": clip_seconds,
                        "sample_rate": sample_rate, "packages": versions, "code": code, "numerics": "portable"}
    todo = [f for f in flavours if not _up_to_date(out_dir / f, _params_hash(params[f]))]
    for name in flavours:
        if name not in todo:
            summary["flavours"][name] = {"status": "up to date", **_manifest_counts(out_dir / name)}
    if todo:
        classes = load_classes()
        recordings, readers, drops, missing = inventory(trees, classes)
        audio, recordings, load_drops = load_recordings(recordings, readers, sample_rate, progress)
        splits = assign_splits(recordings, seed)
        summary["inventory"] = _inventory_summary(recordings, splits, drops + load_drops, missing)
        summary["inventory"]["minutes"] = round(sum(len(a) for a in audio.values()) / sample_rate / 60.0, 1)
        for name in todo:
            summary["flavours"][name] = _build_flavour(out_dir / name, params[name], recordings, audio, splits,
                                                       classes, trees, progress)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def _params_hash(params: dict) -> str:
    return sha256(json.dumps(params, sort_keys=True))


def _up_to_date(folder: Path, params_hash: str) -> bool:
    """The folder's manifest has these parameters and every listed file exists with its size."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        content = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return False
    if content.get("params_hash") != params_hash:
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == entry["bytes"]
               for name, entry in content.get("files", {}).items())


def _manifest_counts(folder: Path) -> dict:
    return {"clips": json.loads((folder / "manifest.json").read_text())["clips"]}


def _inventory_summary(recordings, splits, drops, missing) -> dict:
    per_split = {}
    for split in SPLITS:
        chosen = [r for r in recordings if splits[r.key] == split]
        per_split[split] = {"recordings": len(chosen),
                            "event_classes": len({r.cls for r in chosen if r.kind == "event"}),
                            "background_classes": len({r.cls for r in chosen if r.kind == "background"})}
    return {
        "recordings": len(recordings),
        "groups": len({r.group for r in recordings}),
        "event_classes": len({r.cls for r in recordings if r.kind == "event"}),
        "background_classes": len({r.cls for r in recordings if r.kind == "background"}),
        "splits": per_split,
        "dropped": dict(sorted(Counter(reason for _, reason in drops).items())),
        "missing_from_packages": missing,
    }


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    atomic_write(path, write)


def write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """Write a clip atomically as 16-bit PCM mono WAV (every audio file of the build)."""
    atomic_write(path, lambda tmp: sf.write(str(tmp), wave, sample_rate, subtype="PCM_16", format="WAV"))


def read_timelines(path: str | Path) -> dict[str, dict]:
    """A split's ``scenes_<split>.csv`` as file name -> timeline, the JSON the build wrote there
    (``events``: class, onset, duration, ... in time order; ``background``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `thadcr data build` (it writes the scene lists)")
    with path.open(newline="") as handle:
        return {row["file_name"]: json.loads(row["timeline"]) for row in csv.DictReader(handle)}


def label_file_name(key: str) -> str:
    """The labels flavour's file name of a recording: ``scratch:Animal/Dog1.wav`` -> ``scratch_Animal_Dog1.wav``."""
    package, path = key.split(":", 1)
    return re.sub(r"[^A-Za-z0-9]+", "_", f"{package}_{re.sub(r'[.][A-Za-z0-9]+$', '', path)}").strip("_") + ".wav"


def _plan_items(params: dict, recordings: list[Recording], audio: dict, splits: dict, classes: dict) -> list[dict]:
    """Every clip of the flavour: split, file name, captions and what to render (deterministic)."""
    name, sample_rate = params["flavour"], params["sample_rate"]
    items = []
    if name == "labels":
        for recording in sorted(recordings, key=lambda r: r.key):
            captions = [recording.text]
            original = re.search(r'Original "([^"]+)"', recording.credit)
            title = re.sub(r"\.(wav|aif|mp3|flac|ogg)$", "", original.group(1), flags=re.I) if original else ""
            if " " in title.strip():  # a title ("Corner of a sheep field in summer"), not a file name
                captions.append(title.strip())
            items.append({"split": splits[recording.key], "file_name": label_file_name(recording.key), "captions": captions,
                          "recording": recording})
        return items
    lengths = {k: len(v) / sample_rate for k, v in audio.items()}
    for split_index, split in enumerate(SPLITS):
        pool, background_pool = {}, {}
        for recording in recordings:
            if splits[recording.key] == split:
                target = pool if recording.kind == "event" else background_pool
                target.setdefault(recording.cls, []).append(recording.key)
        count = params["sizes"][split]
        if count and not pool:
            raise EmbeddedDataError(f"no event recordings in the {split} split; check the packages and the source table")
        rng = np.random.default_rng([params["seed"], FLAVOURS.index(name), split_index])
        used = set()
        for index in range(count):
            for _ in range(50):  # avoid repeating a scene's content (classes, order, distance, background)
                scene = plan_scene(rng, pool, background_pool, lengths, classes, params["clip_seconds"])
                if scene.signature() not in used:
                    break
            used.add(scene.signature())
            captions = scene_captions(scene, classes, rng)
            if name == "audiocaps" and split == "development":
                captions = captions[:1]
            items.append({"split": split, "file_name": f"{split}_{index + 1:05d}.wav", "captions": captions, "scene": scene})
    return items


def _build_flavour(folder: Path, params: dict, recordings, audio, splits, classes, trees, progress) -> dict:
    """Write one flavour folder; resumes a partial build with the same parameters."""
    params_hash = _params_hash(params)
    state = folder / ".build.json"
    resumed = state.is_file() and json.loads(state.read_text()).get("params_hash") == params_hash
    if not resumed:  # other parameters (or none): remove what an older build wrote
        for split in SPLITS:
            shutil.rmtree(folder / split, ignore_errors=True)
        (folder / "manifest.json").unlink(missing_ok=True)
    for split in SPLITS:
        (folder / split).mkdir(parents=True, exist_ok=True)
    _write_text(state, json.dumps({"params_hash": params_hash, "params": params}, indent=2))
    sample_rate, clip_seconds = params["sample_rate"], params["clip_seconds"]
    items = _plan_items(params, recordings, audio, splits, classes)
    for item in tqdm(items, desc=f"{params['flavour']} clips", disable=not progress):
        path = folder / item["split"] / item["file_name"]
        if path.is_file():  # written atomically by this very build earlier
            continue
        if "scene" in item:
            wave = render_scene(item["scene"], audio, sample_rate, clip_seconds)
        else:
            wave = audio[item["recording"].key][: int(round(clip_seconds * sample_rate))]
        write_wav(path, wave, sample_rate)
    by_key = {r.key: r for r in recordings}
    header = ["file_name"] + [f"caption_{i}" for i in range(1, N_CAPTIONS + 1)]
    for split in SPLITS:
        chosen = [i for i in items if i["split"] == split]
        rows = [[i["file_name"]] + i["captions"] + [""] * (N_CAPTIONS - len(i["captions"])) for i in chosen]
        _write_csv(folder / f"clotho_captions_{split}.csv", header, rows)
        if params["flavour"] != "labels":
            _write_csv(folder / f"scenes_{split}.csv", ["file_name", "timeline", "sources", "licences"],
                       [_scene_row(i, by_key) for i in chosen])
    _write_csv(folder / "sources.csv",
               ["key", "package", "path", "class", "kind", "group", "split", "text", "licence", "credit"],
               [[r.key, r.package, r.path, r.cls, r.kind, r.group, splits[r.key], r.text, r.licence, r.credit]
                for r in recordings])
    licences = folder / "LICENSES"
    licences.mkdir(exist_ok=True)
    for package, tree in trees.items():
        copyright_file = tree / f"usr/share/doc/{package}/copyright"
        if copyright_file.is_file():
            atomic_write(licences / f"{package}.copyright", lambda tmp, c=copyright_file: shutil.copyfile(c, tmp))
    clips = {s: sum(i["split"] == s for i in items) for s in SPLITS}
    captions = {s: sum(len(i["captions"]) for i in items if i["split"] == s) for s in SPLITS}
    _write_text(folder / "README.md", _readme(params, recordings, splits, clips, captions, trees))
    files = {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")
             and p.name != "manifest.json" and not p.name.endswith(".partial")}
    manifest = {"params_hash": params_hash, "params": params, "clips": clips, "captions": captions, "files": files}
    _write_text(folder / "manifest.json", json.dumps(manifest, indent=1))
    state.unlink()
    return {"status": "resumed" if resumed else "built", "clips": clips, "captions": captions}


def _scene_row(item: dict, by_key: dict[str, Recording]) -> list[str]:
    scene = item["scene"]
    timeline = {
        "events": [{"class": e.cls, "source": e.key, "onset": round(e.onset, 3), "duration": round(e.duration, 3),
                    "gain_db": round(e.gain_db, 2), "distant": e.distant, "repeats": e.repeats} for e in scene.events],
        "relations": scene.relations,
        "background": None if scene.background is None else {
            "class": scene.background_cls, "source": scene.background, "gain_db": round(scene.background_gain_db, 2)},
    }
    keys = [e.key for e in scene.events] + ([scene.background] if scene.background else [])
    return [item["file_name"], json.dumps(timeline), ";".join(keys), ";".join(sorted({by_key[k].licence for k in keys}))]


def _readme(params: dict, recordings, splits, clips, captions, trees) -> str:
    name = params["flavour"]
    what = {
        "audiocaps": "AudioCaps-like: development clips have ONE caption (caption_1; caption_2..5 are empty "
                     "cells, which the reader treats as absent); validation and evaluation clips have five.",
        "clotho": "Clotho-like: every clip has five distinct captions.",
        "labels": "Single real recordings with the text their package gives them (Tux Paint phrases, "
                  "OpenSFX titles and original recording names, file names). caption_1 is that text, "
                  "caption_2 the original recording's title where OpenSFX names one; empty cells are absent. "
                  "A sanity and zero-shot check set; its splits are the same source splits as the scenes'.",
    }[name]
    lines = [
        f"# thadcr embedded data set: `{name}`",
        "",
        "Made by `thadcr data build` from real recordings shipped in Debian packages (see",
        "`docs/decisions/data.md` of the thadcr repository for how and why).",
        "",
        what,
        "",
        "Layout (Clotho v2): `development/`, `validation/`, `evaluation/` hold 16-bit PCM mono WAV at "
        f"{params['sample_rate']} Hz"
        + (f", {params['clip_seconds']} s per scene" if name != "labels" else f", at most {params['clip_seconds']} s") + ";",
        "`clotho_captions_<split>.csv` has the header `file_name,caption_1,...,caption_5`."
        + (" `scenes_<split>.csv` gives each scene's timeline (classes, sources, onsets, levels)." if name != "labels" else ""),
        "`sources.csv` lists every source recording with its class, split, label text, licence and credit;",
        "`LICENSES/` holds each package's Debian copyright file; `manifest.json` the sha256 of every file.",
        "",
        "| split | clips | captions |",
        "|---|---|---|",
        *[f"| {s} | {clips[s]} | {captions[s]} |" for s in SPLITS],
        "",
        "## Sources, licences and attribution",
        "",
        "Source recordings never cross splits (split by source recording, stratified by class). The audio",
        "is derived from the packages below and keeps their licences (GPL and Creative Commons",
        "attribution / share-alike terms): redistribute it only with this README, `sources.csv` and `LICENSES/`.",
        "",
        "| package | version | recordings used | licences (from usr/share/doc/<package>/copyright) |",
        "|---|---|---|---|",
    ]
    for package in trees:
        used = [r for r in recordings if r.package == package]
        found = sorted({r.licence.split(";")[0] for r in used})
        lines.append(f"| {package} | {params['packages'][package]} | {len(used)} | {', '.join(found) or '-'} |")
    lines += [
        "",
        "Copyright holders per package (Debian copyright files, `Files: *` stanzas and the ones covering",
        "the audio); OpenSFX credits each sound's original author in `sources.csv` (column `credit`).",
        "",
    ]
    for package, tree in trees.items():
        holders = sorted({r.credit for r in recordings if r.package == package and r.credit and package != "openttd-opensfx"})
        if package == "openttd-opensfx":
            holders = ["Janis Lukss, Wuzzy, Richard Wheeler and the freesound authors named per sound in sources.csv"]
        lines.append(f"- **{package}**: {'; '.join(holders)[:600] or 'see LICENSES/' + package + '.copyright'}")
    lines += ["", "## Build parameters", "", "```json", json.dumps(params, indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)
