"""Text-to-audio search with a trained model: `thadcr search "a dog barks, then a bell rings"`.

The clips of a split, or of a folder of one's own audio files, are encoded once per checkpoint
into an index of their embeddings (the model's `Embeddings`: THA token levels, DP, factors),
kept on disk in float16; each query then encodes only its caption and is scored against the
index in float32. Clips are read and cropped as evaluation reads them: mono, resampled, the
log-mel front end of the data cache, the centre `clip_seconds` of each file.

An index file is named by what it indexes (the checkpoint and the split or folder) and by a key
of everything its embeddings depend on: the checkpoint file and every audio file (path, size,
modification time), the model's config, the log-mel settings, the clip length, the index format
and the thadcr version. When any of them changes the index is built again and the stale file
removed. Split indexes live beside the log-mel cache (``<cache_dir>/search``), folder indexes in
``$XDG_CACHE_HOME/thadcr/search`` (default ``~/.cache/thadcr/search``); files are written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from thadcr import __version__
from thadcr.model.audio import LogMel
from thadcr.data.audio_io import AudioError, load_audio
from thadcr.run.checkpoint import load_trained
from thadcr.config import Config
from thadcr.data.datasets import crop_frames
from thadcr.data.readers import normalise_caption
from thadcr.errors import UsageError
from thadcr.run.evaluation import EvalSet, encode_clips, frames_per_clip, front_end
from thadcr.files import AUDIO_SUFFIXES, TORCH_LOAD_ERRORS, atomic_save, sha256
from thadcr.model.retrieval import Embeddings, RetrievalModel, concat_embeddings

log = logging.getLogger(__name__)

INDEX_VERSION = 1  # bump when the stored format or the way clips are encoded changes
STORE_DTYPE = torch.float16  # embeddings on disk; scoring runs in float32
SCORE_BLOCK = 64  # clips scored at once


@dataclass
class ClipIndex:
    """The clip embeddings of one split or folder for one checkpoint.

    files: one audio file per row; captions: one caption of each clip ("" for a folder);
    audio: `Embeddings` of the clips (float16, CPU); path: the index file; built: True when this
    call encoded the clips, False when they were read from the index file.
    """

    files: list[str]
    captions: list[str]
    audio: Embeddings
    path: Path
    built: bool


@dataclass
class _Source:
    """What an index is built from: the clips, how to encode them, where the index lives."""

    files: list[Path]
    captions: list[str]
    description: dict  # the split or folder, for the index key
    front_end: dict  # the log-mel settings
    n_frames: int
    folder: Path  # where its index files go
    encode: Callable[[bool], Embeddings]  # progress -> clip embeddings


def audio_files(folder: str | Path) -> list[Path]:
    """The audio files under ``folder`` (any depth), sorted: names ending .wav, .flac, .ogg or .mp3
    (any case), except hidden ones (a leading dot, e.g. macOS ``._`` files)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AudioError.at(folder, "not a folder", "Pass a folder of audio files to --audio-dir")
    found = sorted(
        path for path in folder.rglob("*")
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )  # fmt: skip
    if not found:
        kinds = ", ".join(AUDIO_SUFFIXES)
        raise AudioError.at(folder, f"holds no audio files ({kinds})", "Put audio files in it or pass another folder")
    return found


def default_index_folder() -> Path:
    """Where folder indexes go: ``$XDG_CACHE_HOME/thadcr/search`` (default ``~/.cache/thadcr/search``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "thadcr" / "search"


def _digest(value) -> str:
    return sha256(json.dumps(value, sort_keys=True, default=str), length=20)


def _file_state(path: Path) -> list:
    """What tells a changed file: resolved path, size, modification time (ns)."""
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


@torch.no_grad()
def encode_files(
    model: RetrievalModel, files: list[Path], front_end: LogMel, n_frames: int, device: torch.device,
    batch_size: int = 64, progress: bool = False,
) -> Embeddings:
    """Clip embeddings of audio files (any format soundfile reads, any rate and channels): each
    is read mono at the front end's rate, turned into a log-mel and centre-cropped to n_frames."""
    model.eval()
    parts = []
    for start in tqdm(range(0, len(files), batch_size), desc="encode clips", disable=not progress, leave=False):
        logmels = []
        for path in files[start : start + batch_size]:
            wave = load_audio(path, front_end.sample_rate)  # (samples,); an unusable file raises AudioError
            logmels.append(crop_frames(front_end(wave[None])[0], n_frames, "center"))  # (n_frames, n_mels)
        parts.append(model.encode_audio(torch.stack(logmels).to(device)))  # (B, n_frames, n_mels)
    return concat_embeddings(parts)


def _split_source(model: RetrievalModel, config: Config, split: str) -> _Source:
    clips = EvalSet.open(config, split, model, num_workers=0)  # read in this process
    data = clips.split
    first_caption = {int(c): i for i, c in reversed(list(enumerate(data.caption_audio)))}
    captions = [data.captions[first_caption[i]] if i in first_caption else "" for i in range(data.n_clips)]
    return _Source(
        files=[Path(p) for p in data.audio_paths],
        captions=captions,
        description={"split": split, "data_root": str(Path(config.data_root).resolve()), "layout": config.layout},
        front_end=clips.cache.settings,
        n_frames=clips.n_frames,
        folder=clips.cache.folder.parent / "search",
        encode=lambda progress: encode_clips(model, clips, progress),
    )


def _folder_source(model: RetrievalModel, config: Config, audio_dir: str | Path, device: torch.device) -> _Source:
    files = audio_files(audio_dir)
    logmel = front_end(config)  # the front end of `open_split`'s log-mel cache
    n_frames = frames_per_clip(config, logmel)
    return _Source(
        files=files,
        captions=[""] * len(files),
        description={"audio_dir": str(Path(audio_dir).resolve())},
        front_end=logmel.settings,
        n_frames=n_frames,
        folder=default_index_folder(),
        encode=lambda progress: encode_files(model, files, logmel, n_frames, device, config.eval_batch, progress),
    )


def _stored(audio: Embeddings) -> dict:
    """Clip embeddings as saved, the fields of `Embeddings` (audio has no word mask): float16, CPU."""
    half = lambda x: None if x is None else x.detach().to("cpu", STORE_DTYPE).contiguous()  # noqa: E731
    return {"tha": None if audio.tha is None else [half(level) for level in audio.tha],
            "dp": half(audio.dp), "factors": half(audio.factors)}  # fmt: skip


def _read_index(path: Path, key: str) -> dict | None:
    """The saved index at `path` if it is readable and was built for `key`, else None."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except TORCH_LOAD_ERRORS as error:
        log.warning("search index %s is unreadable (%s); building it again", path, error)
        return None
    return saved if isinstance(saved, dict) and saved.get("key") == key else None


def open_index(
    model: RetrievalModel, config: Config, checkpoint: str | Path, split: str = "test",
    audio_dir: str | Path | None = None, index_dir: str | Path | None = None, progress: bool = False,
) -> ClipIndex:
    """The clip index of a split (or, with `audio_dir`, of a folder) for `model` loaded from
    `checkpoint`: read from its index file when the key matches, else encoded and saved."""
    device = next(model.parameters()).device
    if audio_dir is None:
        source = _split_source(model, config, split)
    else:
        source = _folder_source(model, config, audio_dir, device)
    key = json.dumps({
        "index_version": INDEX_VERSION, "thadcr": __version__, "checkpoint": _file_state(Path(checkpoint)),
        "config": config.to_dict(), "front_end": source.front_end, "n_frames": source.n_frames,
        "source": source.description, "files": _digest([_file_state(path) for path in source.files]),
    }, sort_keys=True, default=str)  # fmt: skip
    folder = Path(index_dir) if index_dir is not None else source.folder
    identity = _digest([str(Path(checkpoint).resolve()), source.description])
    path = folder / f"index-{identity}-{_digest(key)}.pt"
    files = [str(p) for p in source.files]
    saved = _read_index(path, key)
    if saved is not None:
        return ClipIndex(files, source.captions, Embeddings(**saved["audio"]), path, built=False)
    stored = _stored(source.encode(progress))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save({"key": key, "files": files, "audio": stored}, path)
    for stale in folder.glob(f"index-{identity}-*.pt"):  # earlier builds for this checkpoint and source
        if stale != path:
            stale.unlink(missing_ok=True)
    return ClipIndex(files, source.captions, Embeddings(**stored), path, built=True)


def _float32(audio: Embeddings, device: torch.device) -> Embeddings:
    convert = lambda x: None if x is None else x.to(device, torch.float32)  # noqa: E731
    return Embeddings(tha=None if audio.tha is None else [convert(level) for level in audio.tha],
                      dp=convert(audio.dp), factors=convert(audio.factors))  # fmt: skip


class Searcher:
    """A trained model and the clip index of one split or folder: each query encodes only its caption.

    ``Searcher(checkpoint, audio_dir="my/sounds")("a dog barks", top=5)``; see `search` for the
    arguments and the hits.
    """

    def __init__(
        self, checkpoint: str | Path, split: str = "test", audio_dir: str | Path | None = None,
        device: str = "auto", index_dir: str | Path | None = None, progress: bool = False,
    ) -> None:
        self.model, self.config = load_trained(checkpoint, device=device)
        self.device = next(self.model.parameters()).device
        self.index = open_index(self.model, self.config, checkpoint, split, audio_dir, index_dir, progress)

    @torch.no_grad()
    def scores(self, query: str) -> torch.Tensor:
        """The similarity S of every indexed clip with the caption `query`: (clips,) float32."""
        text = self.model.encode_text([normalise_caption(query, "the query")])
        audio = self.index.audio
        blocks = [
            self.model.similarity(_float32(audio.select(slice(i, i + SCORE_BLOCK)), self.device), text).float().cpu()
            for i in range(0, len(audio), SCORE_BLOCK)
        ]  # (block, 1) each
        return torch.cat(blocks)[:, 0]

    def __call__(self, query: str, top: int = 5) -> list[dict]:
        """The `top` clips for the caption `query`, best first (see `search`)."""
        if top < 1:
            raise UsageError(f"top={top}: ask for at least 1 clip")
        scores = self.scores(query)
        best = torch.argsort(scores, descending=True, stable=True)[:top]
        return [
            {"file": self.index.files[i], "score": float(scores[i]), "caption": self.index.captions[i]}
            for i in best.tolist()
        ]


def search(
    query: str, checkpoint: str | Path, split: str = "test", top: int = 5, device: str = "auto",
    audio_dir: str | Path | None = None, index_dir: str | Path | None = None, progress: bool = False,
) -> list[dict]:
    """The `top` clips of a split, or of the audio files under `audio_dir`, for a caption, best first.

    Each hit is a dict: file, score (the model's similarity S) and caption (one caption of the
    clip; "" for a folder). The clip embeddings come from the index (see the module docstring),
    encoded only when no up-to-date index exists; `index_dir` overrides where indexes are kept.
    For many queries, keep a `Searcher`: it loads the model once.
    """
    return Searcher(checkpoint, split, audio_dir, device, index_dir, progress)(query, top)
