"""All-pairs THA scoring (paper 2.2, Eq. 1): throughput, memory, and two yardsticks in one run.

    python benchmarks/bench_alignment.py            # about 1-2 minutes on 2 CPU cores
    python benchmarks/bench_alignment.py --quick    # seconds

For tiny dims (M = 256/64/16, d = 256) and the paper's dims (M = 1024/256/64, d = 768), N = 20
words, it prints pairs/s of ``thadcr.model.alignment`` (3 levels, both directions, no autograd) and:

(a) the speed-up over SCAN's way of scoring (a Python loop over captions, each caption against
    all clips with batched matmuls, attended vectors materialised), results checked to 1e-5;
(b) its FLOP rate, counting the naive 8*M*N*d FLOP per pair and level, against a large float32
    matmul timed in the same run, next to each case.

The three are timed interleaved (thadcr, SCAN loop, matmul, again ...) and the best wall time and
the best process CPU time of each are kept: on a shared, oversubscribed machine the load changes
from second to second, and the CPU-time figures are the steadier ones.
OMP_WAIT_POLICY defaults to PASSIVE here: with more runnable threads than cores, spinning
OpenMP workers made every small op up to 10x slower, for both methods alike.
Peak memory: the block budget arithmetic (``block_shape``), and measured as
``torch.cuda.max_memory_allocated`` on CUDA or the growth of the process's peak RSS on CPU.
Training: one batch of 32 x 32 pairs at the tiny profile's dims (and, without --quick, the
paper's), forward + backward, against autograd through the SCAN loop, with the backward/forward
ratio of each and the largest gradient difference.
With CUDA it also times the AudioCaps test scale (957 x 4,785 pairs, paper dims); without CUDA
it says so and skips that. This is a measurement script, not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP threads

import torch  # noqa: E402

from thadcr.model.alignment import EPS, block_shape, default_block_bytes, tha_similarity_level  # noqa: E402

LAM = 9.0
N_WORDS = 20
TINY = {"name": "tiny", "tokens": (256, 64, 16), "d": 256}
PAPER = {"name": "paper", "tokens": (1024, 256, 64), "d": 768}
TINY_PROFILE = {"name": "tiny-profile", "tokens": (64, 64, 16), "d": 64}  # after tha_max_audio_tokens: 64


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def features(n_audio: int, n_text: int, dims: dict, device: torch.device, seed: int = 0):
    """Random float32 levels: audio [(Na, M_l, d)], text [(Nt, N, d)], all words valid."""
    g = torch.Generator(device=device).manual_seed(seed)
    audio = [torch.randn(n_audio, m, dims["d"], generator=g, device=device) for m in dims["tokens"]]
    text = [torch.randn(n_text, N_WORDS, dims["d"], generator=g, device=device) for _ in dims["tokens"]]
    return audio, text, torch.ones(n_text, N_WORDS, dtype=torch.bool, device=device)


def tha_all_pairs(audio, text, mask, budget: int) -> torch.Tensor:
    """thadcr's scorer: the sum over levels of ``tha_similarity_level``."""
    return sum(tha_similarity_level(a, t, mask, LAM, "mean", budget) for a, t in zip(audio, text))


def _cos_unit(unit: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """cos(x, y) over the last axis given x's unit vector, with thadcr's norm clamp (max(|y|, EPS))."""
    return (unit * y).sum(-1) / torch.linalg.vector_norm(y, dim=-1).clamp_min(EPS)


def scan_loop(audio, text, mask) -> torch.Tensor:
    """SCAN-style scoring: for each caption, all clips at once with batched matmuls.

    The clips' unit vectors are computed once up front (SCAN normalises in its encoders); per
    caption and level it forms the (Na, M, n) cosines with one matmul, attends in both directions
    and materialises â (Na, M, d) and t̂ (Na, n, d), then takes the token-wise cosines (mean).
    """
    units = [(a / torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp_min(EPS)) for a in audio]
    n_audio, n_text = audio[0].shape[0], mask.shape[0]
    sim = torch.zeros(n_audio, n_text, device=mask.device)
    for j in range(n_text):
        for a, au, t in zip(audio, units, text):
            words = t[j][mask[j]]  # (n, d)
            wu = words / torch.linalg.vector_norm(words, dim=-1, keepdim=True).clamp_min(EPS)
            p = (au @ wu.T).clamp_min(0)  # (Na, M, n)
            # text-enhanced: tokens attend over words
            sbar = p / torch.linalg.vector_norm(p, dim=1, keepdim=True).clamp_min(EPS)
            a_hat = torch.softmax(LAM * sbar, dim=2) @ words  # (Na, M, d)
            sim[:, j] += _cos_unit(au, a_hat).mean(1)
            # audio-enhanced: words attend over tokens
            sbar = p / torch.linalg.vector_norm(p, dim=2, keepdim=True).clamp_min(EPS)
            t_hat = torch.bmm(torch.softmax(LAM * sbar, dim=1).transpose(1, 2), a)  # (Na, n, d)
            sim[:, j] += _cos_unit(wu, t_hat).mean(1)
    return sim


def timed(fn, device: torch.device) -> tuple[object, float, float]:
    """(fn(), wall seconds, process CPU seconds)."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0, time.process_time() - c0


def matmul_gflop(device: torch.device) -> tuple[float, Callable[[], torch.Tensor]]:
    """GFLOP of one large float32 matmul and a function that runs it."""
    size = 8192 if device.type == "cuda" else 2048
    x, y = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    x @ y  # warm-up
    return 2 * size**3 / 1e9, lambda: x @ y


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def budget_estimate(n_audio: int, n_text: int, dims: dict, budget: int) -> str:
    parts = []
    for m in dims["tokens"]:
        clips, captions = block_shape(n_audio, n_text, m, N_WORDS, dims["d"], 4, budget)
        parts.append(f"M={m}: {clips}x{captions}")
    return f"blocks (clips x captions) {', '.join(parts)} under a {budget / 2**20:.0f} MiB budget"


def run_case(dims: dict, n_audio: int, n_text: int, device: torch.device, budget: int, repeats: int) -> None:
    """Times thadcr, the SCAN loop and a large matmul, interleaved `repeats` times; best of each."""
    audio, text, mask = features(n_audio, n_text, dims, device)
    pairs = n_audio * n_text
    naive = pairs * sum(8 * m * N_WORDS * dims["d"] for m in dims["tokens"]) / 1e9  # GFLOP
    print(f"\n[{dims['name']}] M={'/'.join(map(str, dims['tokens']))}, d={dims['d']}, N={N_WORDS}: "
          f"{n_audio} clips x {n_text} captions = {pairs} pairs, best of {repeats} interleaved runs")
    mm_gflop, mm = matmul_gflop(device)
    best = {"thadcr": (float("inf"),) * 2, "scan": (float("inf"),) * 2, "matmul": (float("inf"),) * 2}
    with torch.no_grad():
        tha_all_pairs([a[:2] for a in audio], [t[:4] for t in text], mask[:4], budget)  # warm-ups
        scan_loop([a[:2] for a in audio], [t[:2] for t in text], mask[:2])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rss0, base = peak_rss_mib(), torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        fast, *_ = timed(lambda: tha_all_pairs(audio, text, mask, budget), device)
        if device.type == "cuda":
            mem = f"peak CUDA memory above inputs {(torch.cuda.max_memory_allocated(device) - base) / 2**20:.0f} MiB"
        else:
            mem = f"peak RSS growth {peak_rss_mib() - rss0:.0f} MiB (0: below an earlier case's peak)"
        slow, *_ = timed(lambda: scan_loop(audio, text, mask), device)
        for _ in range(repeats):
            for name, fn in (("thadcr", lambda: tha_all_pairs(audio, text, mask, budget)),
                             ("scan", lambda: scan_loop(audio, text, mask)), ("matmul", mm)):
                _, wall, cpu = timed(fn, device)
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    (t_fast, c_fast), (t_scan, c_scan), (t_mm, c_mm) = best["thadcr"], best["scan"], best["matmul"]
    err = (fast - slow).abs().max().item()
    print(f"  float32 matmul {mm_gflop / t_mm:.1f} GFLOP/s by wall time, {mm_gflop / c_mm:.1f} per CPU second")
    print(f"  thadcr     {t_fast:7.2f} s wall {c_fast:7.2f} s CPU  {pairs / t_fast:9.0f} pairs/s  "
          f"{naive / t_fast:6.1f} GFLOP/s (naive count) = {100 * naive / t_fast / (mm_gflop / t_mm):.0f}% of the "
          f"matmul rate by wall time, {100 * naive / c_fast / (mm_gflop / c_mm):.0f}% by CPU time [goal >= 50%]")
    print(f"  SCAN loop  {t_scan:7.2f} s wall {c_scan:7.2f} s CPU  {pairs / t_scan:9.0f} pairs/s  "
          f"-> thadcr {t_scan / t_fast:.1f}x faster by wall time, {c_scan / c_fast:.1f}x by CPU time [goal >= 2x]")
    print(f"  same scores: max |difference| {err:.1e} [{'ok' if err <= 1e-5 else 'FAILS'} at 1e-5]")
    print(f"  memory: {mem}; {budget_estimate(n_audio, n_text, dims, budget)}")


def train_case(dims: dict, batch: int, device: torch.device, repeats: int) -> None:
    """One training batch (batch x batch pairs), forward and backward: thadcr against autograd
    through the SCAN loop, interleaved `repeats` times; best of each. Caption lengths are ragged
    (6-28 words, like the embedded captions), so the length-sorted caption blocks matter too."""
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(6, 29, (batch,), generator=g)
    width = int(lengths.max())
    mask = (torch.arange(width)[None] < lengths[:, None]).to(device)
    audio = [torch.randn(batch, m, dims["d"], generator=g).to(device) for m in dims["tokens"]]
    text = [torch.randn(batch, width, dims["d"], generator=g).to(device) for _ in dims["tokens"]]
    weights = torch.randn(batch, batch, generator=g).to(device)
    leaves = audio + text
    for x in leaves:
        x.requires_grad_(True)
    print(f"\n[training batch, {dims['name']} dims] M={'/'.join(map(str, dims['tokens']))}, d={dims['d']}, "
          f"{batch} clips x {batch} captions of 6-28 words, forward + backward, best of {repeats} interleaved runs")
    methods = {"thadcr": lambda: tha_all_pairs(audio, text, mask, None), "SCAN loop": lambda: scan_loop(audio, text, mask)}
    best = {name: [float("inf"), float("inf")] for name in methods}
    grads = {}
    rss0 = peak_rss_mib()
    for repeat in range(repeats + 1):  # the first round warms up
        for name, fn in methods.items():
            for x in leaves:
                x.grad = None
            sim, forward_s, _ = timed(fn, device)
            _, backward_s, _ = timed(lambda: (sim * weights).sum().backward(), device)
            if repeat:
                best[name] = [min(best[name][0], forward_s), min(best[name][1], backward_s)]
            grads[name] = [x.grad.clone() for x in leaves]
            if name == "thadcr" and not repeat:
                growth = peak_rss_mib() - rss0
    for name, (forward_s, backward_s) in best.items():
        print(f"  {name:10s} forward {1000 * forward_s:7.1f} ms  backward {1000 * backward_s:7.1f} ms  "
              f"backward / forward {backward_s / forward_s:4.1f}")
    total = {name: sum(b) for name, b in best.items()}
    err = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(grads["thadcr"], grads["SCAN loop"]))
    print(f"  -> thadcr {total['SCAN loop'] / total['thadcr']:.1f}x faster than autograd through the SCAN loop; "
          f"largest gradient difference {err:.1e} of the largest gradient")
    if device.type == "cpu":
        print(f"  peak RSS growth of thadcr's first forward + backward {growth:.0f} MiB "
              "(the process's peak only grows: 0 means below an earlier case's peak)")


def audiocaps_scale(device: torch.device, budget: int) -> None:
    """957 clips x 4,785 captions, paper dims, float32; again with TF32 matmuls allowed."""
    if device.type != "cuda":
        print("\n[AudioCaps test scale 957 x 4785, paper dims] skipped: no CUDA device here (goal < 10 s on a GPU)")
        return
    audio, text, mask = features(957, 4785, PAPER, device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    for allow_tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        with torch.no_grad():
            tha_all_pairs([a[:8] for a in audio], [t[:64] for t in text], mask[:64], budget)  # warm-up
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            sim, wall, _ = timed(lambda: tha_all_pairs(audio, text, mask, budget), device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        print(f"\n[AudioCaps test scale, matmuls {'TF32' if allow_tf32 else 'float32'}] {tuple(sim.shape)} pairs in "
              f"{wall:.2f} s [goal < 10 s], {sim.numel() / wall:.0f} pairs/s, peak CUDA memory above inputs "
              f"{peak:.0f} MiB (budget {budget / 2**20:.0f} MiB)")
    torch.backends.cuda.matmul.allow_tf32 = tf32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--budget-mib", type=int, default=None,
                        help="block budget in MiB (default: thadcr's, 32 on CPU, 2048 on CUDA)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    budget = args.budget_mib * 2**20 if args.budget_mib else default_block_bytes(device)
    print(f"device {device}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"torch {torch.__version__}")
    if args.quick:
        cases, repeats = [(TINY, 8, 16), (PAPER, 4, 8)], 2
    elif device.type == "cuda":
        cases, repeats = [(TINY, 256, 1280), (PAPER, 64, 320)], 3
    else:
        cases, repeats = [(TINY, 32, 160), (PAPER, 8, 64)], 3
    for dims, n_audio, n_text in cases:
        run_case(dims, n_audio, n_text, device, budget, repeats)
    train_case(TINY_PROFILE, 32, device, repeats)
    if not args.quick:
        train_case(PAPER, 32, device, 2)
    if not args.quick:
        audiocaps_scale(device, budget)


if __name__ == "__main__":
    main()
