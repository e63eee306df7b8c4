"""What the README's GPU section needs, measured on one GPU in a few minutes (CPU parts alone without CUDA).

The paper profile (`paper-audiocaps`: the AudioSet HTS-AT and a BERT-base-sized text encoder, both
fine-tuned; random weights here, the cost is the same) on synthetic inputs, nothing downloaded:

1. training step time and peak memory at batch 32 with AMP (bfloat16 autocast) for DP, THA and
   THA+DCR (CUDA only);
2. the training loader's clips/s with the profile's `num_workers`, for 10 s clips at 44.1/48 kHz in
   WAV/FLAC/OGG/MP3 (decoding, resampling and the log-mel: a first epoch), then from the filled
   log-mel cache (CPU work: measured with or without CUDA);
3. THA scoring of an AudioCaps-size test set, 957 clips x 4,785 captions, with every audio token of
   the three levels (1024 / 256 / 64 per clip) and 8-20 words per caption: time and peak memory,
   goal under 10 s (CUDA only).

Prints a table and writes a JSON file (`--out`, written atomically). Without CUDA it says which
parts it skipped. `--smoke` runs every part on the CPU at toy sizes (tiny profile, batch 4, 40 x 200
pairs): a check of the script itself, not a measurement (tests/test_benchmarks.py runs it).

    .venv/bin/python benchmarks/gpu_check.py [--out benchmarks/out/gpu_check.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from thadcr.config import make_config
from thadcr.data.datasets import CaptionDataset, GlobalBatchSampler, clip_frames, data_loader
from thadcr.data.logmel import LogMelCache
from thadcr.data.readers import load_split
from thadcr.run.distributed import Distributed
from thadcr.run.evaluation import front_end, score_all
from thadcr.files import atomic_write_json
from thadcr.model.retrieval import Embeddings, build_model
from thadcr.run.provenance import machine, package_versions
from thadcr.model.text import write_random_bert
from thadcr.run.train import adam, train_step

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic import write_clotho  # noqa: E402  (the tests' writer of Clotho-layout data)

WORDS = "a dog barks while rain falls on the roof then a car passes by and birds sing loudly".split()
TEST_CLIPS, TEST_CAPTIONS = 957, 4785  # the AudioCaps test set of the paper (section 3.1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak GPU memory since `reset_peak` (None on the CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def captions(n: int, generator: torch.Generator) -> list[str]:
    lengths = torch.randint(8, 21, (n,), generator=generator).tolist()
    return [" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (k,), generator=generator)) for k in lengths]


def training_steps(config, steps: int, device: torch.device) -> dict:
    """Seconds per step (median of `steps`, after 2 warm-up steps) and peak GPU memory, batch config.batch_size."""
    torch.manual_seed(0)
    model = build_model(config).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adam(params, config.lr)
    world = Distributed(str(device))
    generator = torch.Generator().manual_seed(0)
    batch = config.batch_size
    logmel = torch.randn(batch, clip_frames(config.clip_seconds), 64, generator=generator).to(device)
    text = captions(batch, generator)
    clip_ids = torch.arange(batch, device=device)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    times = []
    reset_peak(device)
    for step in range(steps + 2):
        synchronize(device)
        started = time.perf_counter()
        train_step(model, world, optimizer, params, logmel, text, clip_ids, config.grad_clip, autocast)
        synchronize(device)
        if step >= 2:
            times.append(time.perf_counter() - started)
    return {"step_s": sorted(times)[len(times) // 2], "step_s_range": [min(times), max(times)],
            "peak_memory_gib": peak_gib(device), "n_parameters": sum(p.numel() for p in params)}


def loader_throughput(config, workers: int, clips: int, batch: int) -> dict:
    """Clips/s of the training loader from audio (empty cache) and from the filled cache."""
    out = {"workers": workers, "clips": clips}
    with tempfile.TemporaryDirectory() as tmp:
        root = write_clotho(Path(tmp) / "data", counts=(clips, 1, 1), seconds=10.0, sr=(44100, 48000),
                            formats=(".wav", ".flac", ".ogg", ".mp3"), captions_per_clip=1)
        split = load_split(root, "clotho", "train")
        for source in ("audio", "cache"):
            cache = LogMelCache(Path(tmp) / "cache", front_end(config), memory_bytes=0)
            dataset = CaptionDataset(split, cache, clip_frames(config.clip_seconds), train=True, seed=0)
            loader = data_loader(dataset, workers, False, batch_sampler=GlobalBatchSampler(clips, batch, seed=0))
            started = time.perf_counter()
            n = sum(len(b["captions"]) for b in loader)
            out[f"from_{source}_clips_per_s"] = n / (time.perf_counter() - started)
    return out


def tha_scoring(config, device: torch.device, n_clips: int = TEST_CLIPS, n_captions: int = TEST_CAPTIONS) -> dict:
    """S_THA of every (clip, caption) pair of an AudioCaps-size test set (projected token levels of
    the encoder's stages 2-4, bfloat16 storage as under AMP): seconds and peak GPU memory."""
    model = build_model(config.replace(variant="THA")).to(device).eval()
    generator = torch.Generator(device).manual_seed(0)
    grid = model.audio_encoder.config.spec_size // model.audio_encoder.config.patch_stride
    tokens = [(grid // 2**i) ** 2 for i in (1, 2, 3)]  # stages 2-4 of the paper HTS-AT: 1024, 256, 64
    d = config.joint_dim

    def levels(rows: int, widths: list[int]) -> list[torch.Tensor]:
        return [torch.randn(rows, w, d, device=device, generator=generator).bfloat16() for w in widths]

    lengths = torch.randint(8, 21, (n_captions,), generator=generator, device=device)
    mask = torch.arange(20, device=device)[None] < lengths[:, None]  # (Nt, 20) valid words
    audio, text = Embeddings(tha=levels(n_clips, tokens)), Embeddings(tha=levels(n_captions, [20] * 3), mask=mask)
    synchronize(device)
    reset_peak(device)
    started = time.perf_counter()
    sim = score_all(model, audio, text)
    synchronize(device)
    seconds = time.perf_counter() - started
    assert sim.shape == (n_clips, n_captions) and torch.isfinite(sim).all()
    return {"clips": n_clips, "captions": n_captions, "audio_tokens": tokens, "seconds": seconds,
            "peak_memory_gib": peak_gib(device), "goal_s": 10.0}


def report(results: dict) -> None:
    print(f"device: {results['device']}, profile {results['profile']}")
    for variant, r in results.get("training", {}).items():
        memory = "" if r["peak_memory_gib"] is None else f", peak {r['peak_memory_gib']:.1f} GiB"
        print(f"train step {variant:<8} batch {results['batch']}: {r['step_s']:.3f} s/step "
              f"({r['step_s_range'][0]:.3f}-{r['step_s_range'][1]:.3f}){memory}")
    loader = results["loader"]
    print(f"loader, {loader['workers']} workers: {loader['from_audio_clips_per_s']:.0f} clips/s from audio, "
          f"{loader['from_cache_clips_per_s']:.0f} clips/s from the cache")
    if "tha_scoring" in results:
        r = results["tha_scoring"]
        memory = "" if r["peak_memory_gib"] is None else f", peak {r['peak_memory_gib']:.1f} GiB"
        print(f"THA scoring {r['clips']} x {r['captions']}: {r['seconds']:.1f} s (goal < {r['goal_s']:.0f} s){memory}")
    for line in results["skipped"]:
        print(f"skipped: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/out/gpu_check.json", help="JSON file of the figures")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per variant")
    parser.add_argument("--batch", type=int, default=32, help="training batch size")
    parser.add_argument("--clips", type=int, default=256, help="10 s clips the loader reads")
    parser.add_argument("--smoke", action="store_true", help="every part on the CPU at toy sizes (checks the script)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    profile, batch = ("tiny", 4) if args.smoke else ("paper-audiocaps", args.batch)
    results: dict = {"device": torch.cuda.get_device_name(device) if cuda else "cpu (no CUDA)", "profile": profile,
                     "batch": batch, "machine": machine(), "versions": package_versions(), "skipped": []}
    with tempfile.TemporaryDirectory() as tmp:
        changes = {"audio_checkpoint": None, "batch_size": batch, "device": str(device)}
        if not args.smoke:
            changes["text_model"] = str(write_random_bert(Path(tmp) / "bert-base"))
        config = make_config(profile, changes)
        if cuda or args.smoke:
            results["training"] = {v: training_steps(config.replace(variant=v), 1 if args.smoke else args.steps, device)
                                   for v in ("DP", "THA", "THA+DCR")}
        else:
            results["skipped"].append("training steps at batch 32 with AMP (needs CUDA)")
        results["loader"] = loader_throughput(config, config.num_workers, 8 if args.smoke else args.clips, 4)
        if cuda or args.smoke:
            results["tha_scoring"] = tha_scoring(config, device, *((40, 200) if args.smoke else ()))
        else:
            results["skipped"].append(f"THA scoring of {TEST_CLIPS} x {TEST_CAPTIONS} (needs CUDA)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, results)
    report(results)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
