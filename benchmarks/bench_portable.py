"""What vendor-independent numerics cost (thadcr.portable against torch's MKL-backed routines).

Prints, side by side in one process (one thread, portable ATen and MKL settings), the time of the
log-mel front end on a batch of 16 five-second clips (DFT as matrix products vs torch's FFT) and of
exp, log and sqrt on a THA-sized tensor (ATen's own kernels vs MKL's vector math). Figures, not a test:

    .venv/bin/python benchmarks/bench_portable.py
"""

import time

from thadcr import numerics

numerics.apply("portable")

import torch  # noqa: E402

from thadcr import portable  # noqa: E402
from thadcr.model.audio import LogMel  # noqa: E402


def best_of(fn, repeats: int = 5) -> float:
    """Smallest wall time of `repeats` calls (after one warm-up call), in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    wave = torch.randn(16, 5 * 32000)
    matmul, fft = LogMel(), LogMel()
    fft.exact = False  # torch.stft: MKL's DFT, torch.log10: MKL's vector math
    rows = [("log-mel, 16 clips of 5 s", best_of(lambda: matmul(wave)), best_of(lambda: fft(wave)))]
    x = torch.randn(16, 64, 16, 24) * 4  # (audio tokens x captions x words) of a THA batch
    positive = x.abs() + 1e-3
    rows += [
        ("exp, 393k values", best_of(lambda: portable.exp(x)), best_of(lambda: torch.exp(x))),
        ("log, 393k values", best_of(lambda: portable.log(positive)), best_of(lambda: torch.log(positive))),
        ("sqrt, 393k values", best_of(lambda: portable.sqrt(positive)), best_of(lambda: torch.sqrt(positive))),
    ]
    print(f"{'operation':28s} {'portable':>10s} {'torch':>10s} {'ratio':>6s}")
    for name, ours, theirs in rows:
        print(f"{name:28s} {ours * 1e3:8.1f} ms {theirs * 1e3:8.1f} ms {ours / theirs:5.1f}x")


if __name__ == "__main__":
    main()
