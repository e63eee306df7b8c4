"""Training-loader throughput: clips per second, and per worker, for 10 s clips, from audio and from the cache.

The paper profiles read 10 s clips (AudioCaps; Clotho cropped to 10 s) with `num_workers` DataLoader
processes. This writes `--clips` synthetic 10 s clips at the sample rates and formats of a real
download (44.1 and 48 kHz WAV, FLAC, OGG and MP3: every clip is decoded and resampled to 32 kHz),
then times one pass of the training loader over them for each number of workers:

- from audio: an empty log-mel cache, so each clip is decoded, resampled and turned into a log-mel
  (the first epoch of a run);
- from the cache: the same clips again with the disk cache filled and no in-memory copies (later
  epochs of a data set larger than memory).

    .venv/bin/python benchmarks/bench_loader.py [--clips 96] [--workers 0 1 2] [--batch 16]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from thadcr.model.audio import LogMel
from thadcr.data.datasets import CaptionDataset, GlobalBatchSampler, clip_frames, data_loader
from thadcr.data.logmel import LogMelCache
from thadcr.data.readers import load_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic import write_clotho  # noqa: E402  (the tests' writer of Clotho-layout data)

RATES = (44100, 48000)
FORMATS = (".wav", ".flac", ".ogg", ".mp3")


def one_pass(root: Path, cache_dir: Path, workers: int, batch: int) -> float:
    """Seconds for one epoch of the training loader (log-mel cache in `cache_dir`, nothing in memory)."""
    split = load_split(root, "clotho", "train")
    cache = LogMelCache(cache_dir, LogMel(sample_rate=32000), memory_bytes=0)
    dataset = CaptionDataset(split, cache, clip_frames(10.0), train=True, seed=0)
    sampler = GlobalBatchSampler(len(dataset), batch, seed=0)
    loader = data_loader(dataset, workers, pin_memory=False, batch_sampler=sampler)
    started = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=96, help="10 s clips written (one caption each)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts to time")
    parser.add_argument("--batch", type=int, default=16, help="batch size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_clotho(Path(tmp) / "data", counts=(args.clips, 1, 1), seconds=10.0, sr=RATES, formats=FORMATS,
                            captions_per_clip=1)
        print(f"{args.clips} clips of 10 s ({', '.join(map(str, RATES))} Hz; {', '.join(FORMATS)}), batch {args.batch}")
        print(f"{'workers':>8}{'source':>8}{'clips/s':>10}{'per worker':>12}")
        for workers in args.workers:
            cache_dir = Path(tmp) / f"cache-{workers}"
            for source in ("audio", "cache"):
                seconds = one_pass(root, cache_dir, workers, args.batch)
                n = args.clips // args.batch * args.batch
                per_worker = f"{n / seconds / workers:>12.1f}" if workers else f"{'(main)':>12}"
                print(f"{workers:>8}{source:>8}{n / seconds:>10.1f}{per_worker}")
            shutil.rmtree(cache_dir)


if __name__ == "__main__":
    main()
