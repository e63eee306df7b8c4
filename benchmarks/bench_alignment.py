"""All-pairs THA scoring (paper 2.2, Eq. 1): throughput, memory, and two yardsticks in one run.

    python benchmarks/bench_alignment.py            # about 1-2 minutes on 2 CPU cores
    python benchmarks/bench_alignment.py --quick    # seconds

For tiny dims (M = 256/64/16, d = 256) and the paper's dims (M = 1024/256/64, d = 768), N = 20
words, it prints pairs/s of ``thadcr.alignment`` (3 levels, both directions, no autograd) and:

(a) the speed-up over SCAN's way of scoring (a Python loop over captions, each caption against
    all clips with batched matmuls, attended vectors materialised), results checked to 1e-5;
(b) its FLOP rate, counting the naive 8*M*N*d FLOP per pair and level, against a large float32
    matmul timed in the same run.

Peak memory: the block budget arithmetic (``block_shape``), and measured as
``torch.cuda.max_memory_allocated`` on CUDA or the growth of the process's peak RSS on CPU.
With CUDA it also times the AudioCaps test scale (957 x 4,785 pairs, paper dims); without CUDA
it says so and skips that. This is a measurement script, not a test.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from thadcr.alignment import EPS, DEFAULT_BLOCK_BYTES, block_shape, tha_similarity_level

LAM = 9.0
N_WORDS = 20
TINY = {"name": "tiny", "tokens": (256, 64, 16), "d": 256}
PAPER = {"name": "paper", "tokens": (1024, 256, 64), "d": 768}


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


def _cos_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """cos over the last axis with the same norm clamp as thadcr (max(|x|, EPS))."""
    nx = torch.linalg.vector_norm(x, dim=-1).clamp_min(EPS)
    ny = torch.linalg.vector_norm(y, dim=-1).clamp_min(EPS)
    return (x * y).sum(-1) / (nx * ny)


def scan_loop(audio, text, mask) -> torch.Tensor:
    """SCAN-style scoring: for each caption, all clips at once with batched matmuls.

    Unit vectors are computed once up front (SCAN normalises in its encoders); per caption and
    level it forms the (Na, M, n) cosines with one matmul, attends in both directions and
    materialises â (Na, M, d) and t̂ (Na, n, d), then takes the token-wise cosines (mean).
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
            sim[:, j] += _cos_rows(a, a_hat).mean(1)
            # audio-enhanced: words attend over tokens
            sbar = p / torch.linalg.vector_norm(p, dim=2, keepdim=True).clamp_min(EPS)
            t_hat = torch.bmm(torch.softmax(LAM * sbar, dim=1).transpose(1, 2), a)  # (Na, n, d)
            sim[:, j] += _cos_rows(words[None], t_hat).mean(1)
    return sim


def matmul_rate(device: torch.device, size: int, reps: int = 3) -> float:
    """Best float32 GFLOP/s of a (size x size) @ (size x size) matmul."""
    x, y = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    x @ y
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        x @ y
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def budget_estimate(n_audio: int, n_text: int, dims: dict, budget: int) -> str:
    parts = []
    for m in dims["tokens"]:
        clips, captions = block_shape(n_audio, n_text, m, N_WORDS, dims["d"], 4, budget)
        parts.append(f"M={m}: {clips}x{captions}")
    return f"blocks (clips x captions) {', '.join(parts)} under a {budget / 2**20:.0f} MiB budget"


def run_case(dims: dict, n_audio: int, n_text: int, device: torch.device, budget: int, rate: float) -> None:
    audio, text, mask = features(n_audio, n_text, dims, device)
    pairs = n_audio * n_text
    naive = pairs * sum(8 * m * N_WORDS * dims["d"] for m in dims["tokens"])
    print(f"\n[{dims['name']}] M={'/'.join(map(str, dims['tokens']))}, d={dims['d']}, N={N_WORDS}: "
          f"{n_audio} clips x {n_text} captions = {pairs} pairs")
    with torch.no_grad():
        tha_all_pairs([a[:2] for a in audio], [t[:4] for t in text], mask[:4], budget)  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rss0, base = peak_rss_mib(), torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        sync(device)
        t0 = time.perf_counter()
        fast = tha_all_pairs(audio, text, mask, budget)
        sync(device)
        t_fast = time.perf_counter() - t0
        if device.type == "cuda":
            mem = f"peak CUDA memory above inputs {(torch.cuda.max_memory_allocated(device) - base) / 2**20:.0f} MiB"
        else:
            mem = f"peak RSS growth {peak_rss_mib() - rss0:.0f} MiB"
        scan_loop([a[:2] for a in audio], [t[:2] for t in text], mask[:2])  # warm-up
        sync(device)
        t0 = time.perf_counter()
        slow = scan_loop(audio, text, mask)
        sync(device)
        t_scan = time.perf_counter() - t0
    err = (fast - slow).abs().max().item()
    print(f"  thadcr      {t_fast:7.2f} s  {pairs / t_fast:10.0f} pairs/s  {naive / t_fast / 1e9:7.1f} GFLOP/s (naive count)"
          f" = {100 * naive / t_fast / 1e9 / rate:.0f}% of the matmul rate [goal >= 50%]")
    print(f"  SCAN loop   {t_scan:7.2f} s  {pairs / t_scan:10.0f} pairs/s  -> thadcr is {t_scan / t_fast:.1f}x faster "
          f"[goal >= 2x]; max |difference| {err:.1e} [{'ok' if err <= 1e-5 else 'FAILS'} at 1e-5]")
    print(f"  memory: {mem}; {budget_estimate(n_audio, n_text, dims, budget)}")


def audiocaps_scale(device: torch.device, budget: int) -> None:
    if device.type != "cuda":
        print("\n[AudioCaps test scale 957 x 4785, paper dims] skipped: no CUDA device here (goal < 10 s on a GPU)")
        return
    audio, text, mask = features(957, 4785, PAPER, device)
    with torch.no_grad():
        tha_all_pairs([a[:8] for a in audio], [t[:64] for t in text], mask[:64], budget)  # warm-up
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        sync(device)
        t0 = time.perf_counter()
        sim = tha_all_pairs(audio, text, mask, budget)
        sync(device)
        dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    print(f"\n[AudioCaps test scale] {tuple(sim.shape)} pairs in {dt:.2f} s [goal < 10 s], "
          f"{sim.numel() / dt:.0f} pairs/s, peak CUDA memory above inputs {peak:.0f} MiB "
          f"(budget {budget / 2**20:.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--budget-mib", type=int, default=None,
                        help=f"block budget in MiB (default {DEFAULT_BLOCK_BYTES // 2**20} on CPU, 4096 on CUDA)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    budget = (args.budget_mib * 2**20 if args.budget_mib else
              4096 * 2**20 if device.type == "cuda" else DEFAULT_BLOCK_BYTES)
    rate = matmul_rate(device, 8192 if device.type == "cuda" else 2048)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"float32 matmul rate {rate:.1f} GFLOP/s")
    if args.quick:
        cases = [(TINY, 8, 16), (PAPER, 4, 8)]
    elif device.type == "cuda":
        cases = [(TINY, 256, 1280), (PAPER, 64, 320)]
    else:
        cases = [(TINY, 64, 160), (PAPER, 16, 64)]
    for dims, n_audio, n_text in cases:
        run_case(dims, n_audio, n_text, device, budget, rate)
    if not args.quick:
        audiocaps_scale(device, budget)


if __name__ == "__main__":
    main()
