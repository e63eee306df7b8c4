"""Computations whose bits do not depend on the CPU's vendor (portable numerics).

torch's FFT (`torch.stft`) and its elementwise transcendental functions (`torch.log10`, `exp`, `sin`,
`cos`, `sqrt`, `tanh`, `erfinv`, ... on CPU float tensors) call Intel MKL's DFT and vector-math (VML)
routines, which pick their code by the processor and its vendor: on an AMD EPYC they run MKL's
generic kernels, on an Intel Xeon its AVX-512 ones, and the last bits differ. This module computes
the log-mel front end, resampling and the exp / log / sqrt of the alignment and the factors from
parts whose order of arithmetic is fixed:

- constant tables (Hann window, DFT twiddles, Slaney mel filters, the windowed-sinc resampling
  kernel) in float64 with Python's `math` on exact integer angles, rounded once to float32;
- the transform as matrix products (MKL's GEMM in its COMPATIBLE path, the same on Intel and AMD)
  and ATen's elementwise kernels (AVX2 in portable mode);
- exp, log, log10 and sqrt from ATen's own kernels (`exp2`, `log1p`, `rsqrt`, which torch does not
  hand to VML) with exact argument reduction (`torch.frexp`, powers of two). `exp`, `log` and `sqrt`
  call torch's own functions when the process is not in portable numerics or the tensor is not on
  the CPU (CUDA has no vendor question), so the paper profiles keep torch's fastest kernels.

`docs/decisions/numerics.md` says how the vendor-dependent routines were found
(`thadcr numerics trace`, `thadcr.numerics.vendor_dispatched_calls`).
"""

from __future__ import annotations

import functools
import math

import torch
import torchaudio.functional as AF

from thadcr import numerics

LOG10_2 = math.log10(2.0)
LN2 = math.log(2.0)
LN2_HIGH = 0.693145751953125  # ln 2 = LN2_HIGH + LN2_LOW; n * LN2_HIGH is exact in float32 for |n| < 2^9
LN2_LOW = LN2 - LN2_HIGH
LOG2_E = 1.0 / LN2
INV_LN10 = 1.0 / math.log(10.0)


# ---------------------------------------------------------------------------------------------
# Elementwise functions (differentiable)
# ---------------------------------------------------------------------------------------------


def _portable(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and numerics.is_portable()


def exp(x: torch.Tensor) -> torch.Tensor:
    """e^x. Portable: x = n ln 2 + r with integer n and r within ln2 / 2 of 0, e^x = 2^n exp2(r log2 e)."""
    if not _portable(x):
        return torch.exp(x)
    n = torch.round(x.detach().clamp(-1100, 1100) * LOG2_E)  # clamped: e^(+-inf) = inf / 0, not NaN
    return torch.ldexp(torch.exp2((x - n * LN2_HIGH - n * LN2_LOW) * LOG2_E), n)


def log(x: torch.Tensor) -> torch.Tensor:
    """Natural log of x > 0. Portable: x = m 2^e with m in [0.5, 1), log x = e ln 2 + log1p(m - 1)."""
    if not _portable(x):
        return torch.log(x)
    _, e = torch.frexp(x.detach())
    mantissa = torch.ldexp(x, -e)  # exact, and differentiable: d mantissa / dx = 2^-e
    return torch.log1p(mantissa - 1.0) + e.to(x.dtype) * LN2


def sqrt(x: torch.Tensor) -> torch.Tensor:
    """Square root of x > 0. Portable: x rsqrt(x) (ATen's rsqrt is 1 / the exact hardware root)."""
    if not _portable(x):
        return torch.sqrt(x)
    return x * torch.rsqrt(x)


# ---------------------------------------------------------------------------------------------
# Constant tables (float64 Python arithmetic, rounded once to float32)
# ---------------------------------------------------------------------------------------------


def _unit_circle(numerator: int, denominator: int) -> tuple[float, float]:
    """cos and sin of 2 pi numerator / denominator, with the angle reduced exactly in integers."""
    angle = 2.0 * math.pi * (numerator % denominator) / denominator
    return math.cos(angle), math.sin(angle)


@functools.lru_cache(maxsize=None)
def hann_window(n: int) -> torch.Tensor:
    """Periodic Hann window (n,): w[i] = 0.5 - 0.5 cos(2 pi i / n), as `torch.hann_window(n)`."""
    return torch.tensor([0.5 - 0.5 * _unit_circle(i, n)[0] for i in range(n)], dtype=torch.float32)


def _split(n: int) -> tuple[int, int]:
    """n = p * q with p the largest divisor of n not above sqrt(n) (p = 1 for a prime n)."""
    p = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return p, n // p


def _dft_block(rows: int, cols: int, period: int) -> torch.Tensor:
    """Real form of the DFT matrix W[r, c] = exp(-2 pi i r c / period): (2 rows, 2 cols) so that
    [re | im] (.., 2 rows) @ it = [re | im] of the complex product."""
    cos = torch.tensor([[_unit_circle(r * c, period)[0] for c in range(cols)] for r in range(rows)], dtype=torch.float64)
    sin = torch.tensor([[_unit_circle(r * c, period)[1] for c in range(cols)] for r in range(rows)], dtype=torch.float64)
    # (a + ib)(cos - i sin) = (a cos + b sin) + i (b cos - a sin)
    return torch.cat([torch.cat([cos, -sin], 1), torch.cat([sin, cos], 1)], 0).float()


@functools.lru_cache(maxsize=None)
def _rdft_tables(n_fft: int) -> dict[str, torch.Tensor]:
    """Tables of the two-step ("four-step") DFT of n_fft = p * q points (see `power_spectrum`)."""
    p, q = _split(n_fft)
    k2 = q // 2 + 1  # k = k1 + p k2 <= n_fft / 2 needs k2 <= q / 2
    twiddle = [[_unit_circle(n2 * k1, n_fft) for k1 in range(p)] for n2 in range(q)]  # (q, p)
    first = _dft_block(p, p, p)[:p]  # real input: only the "re" half of the rows
    return {
        "first": first,  # (p, 2p): x[n1] -> A[k1] over the length-p DFT
        "twiddle_cos": torch.tensor([[c for c, _ in row] for row in twiddle], dtype=torch.float32),
        "twiddle_sin": torch.tensor([[s for _, s in row] for row in twiddle], dtype=torch.float32),
        "second": _dft_block(q, k2, q),  # (2q, 2 k2): B[n2] -> X[k2] over the length-q DFT
        "shape": torch.tensor([p, q, k2]),
    }


def _hz_to_mel_slaney(hz: float) -> float:
    """Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    if hz < 1000.0:
        return hz * 3.0 / 200.0
    return 15.0 + math.log(hz / 1000.0) / (math.log(6.4) / 27.0)


def _mel_to_hz_slaney(mel: float) -> float:
    if mel < 15.0:
        return mel * 200.0 / 3.0
    return 1000.0 * math.exp((math.log(6.4) / 27.0) * (mel - 15.0))


@functools.lru_cache(maxsize=None)
def mel_filters(n_freqs: int, n_mels: int, sample_rate: int, fmin: float, fmax: float) -> torch.Tensor:
    """Slaney-scale triangular mel filters with Slaney area normalisation, (n_freqs, n_mels).

    The filters of librosa / torchaudio (`melscale_fbanks(norm="slaney", mel_scale="slaney")`):
    n_mels + 2 points equally spaced in mel from fmin to fmax; filter m rises from point m to
    m + 1 and falls to m + 2 over the linear frequency grid, scaled by 2 / (f[m + 2] - f[m]).
    """
    low, high = _hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax)
    points = [_mel_to_hz_slaney(low + (high - low) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    freqs = [(sample_rate / 2) * i / (n_freqs - 1) for i in range(n_freqs)]
    table = torch.zeros(n_freqs, n_mels, dtype=torch.float64)
    for m in range(n_mels):
        left, centre, right = points[m], points[m + 1], points[m + 2]
        for i, f in enumerate(freqs):
            rise, fall = (f - left) / (centre - left), (right - f) / (right - centre)
            table[i, m] = max(0.0, min(rise, fall)) * 2.0 / (right - left)
    return table.float()


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------


def frames(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Centred frames of a batch (B, samples) -> (B, 1 + samples // hop, n_fft), reflect padding."""
    padded = torch.nn.functional.pad(wave[:, None], (n_fft // 2, n_fft // 2), mode="reflect")[:, 0]
    return padded.unfold(-1, n_fft, hop)


def power_spectrum(frames_: torch.Tensor) -> torch.Tensor:
    """Squared magnitude of the DFT of real frames (..., n) for bins 0..n/2 -> (..., n // 2 + 1), as matrix products.

    With n = p q, sample index t = q n1 + n2 and bin k = k1 + p k2 (Cooley-Tukey):
    X[k1 + p k2] = sum_n2 exp(-2 pi i n2 k2 / q) exp(-2 pi i n2 k1 / n) sum_n1 x[q n1 + n2] exp(-2 pi i n1 k1 / p):
    a length-p DFT over n1 (one matrix product), a twiddle, a length-q DFT over n2 (another).
    """
    tables = _rdft_tables(frames_.shape[-1])
    p, q, k2 = tables["shape"].tolist()
    lead = frames_.shape[:-1]
    x = frames_.reshape(-1, p, q).transpose(1, 2)  # (F, q n2, p n1)
    a = x @ tables["first"].to(x)  # (F, q, 2p): [re | im] over k1
    cos, sin = tables["twiddle_cos"].to(x), tables["twiddle_sin"].to(x)
    re, im = a[..., :p], a[..., p:]
    b = torch.cat([re * cos + im * sin, im * cos - re * sin], -1)  # (F, q n2, 2p) times exp(-2 pi i n2 k1 / n)
    b = torch.cat([b[..., :p].transpose(1, 2), b[..., p:].transpose(1, 2)], -1)  # (F, p k1, 2q)
    out = b @ tables["second"].to(x)  # (F, p k1, 2 k2)
    power = out[..., :k2] ** 2 + out[..., k2:] ** 2  # (F, p k1, k2)
    power = power.transpose(1, 2).reshape(-1, p * k2)  # bin k = k1 + p k2 in order
    return power[:, : p * q // 2 + 1].reshape(*lead, p * q // 2 + 1)


def log10(x: torch.Tensor) -> torch.Tensor:
    """log10 of positive x without MKL's vector math: x = m 2^e (m in [1, 2)), so
    log10 x = e log10 2 + log1p(m - 1) / ln 10 (m - 1 is exact). Computed in float64 and rounded
    once, so float32 results are correctly rounded but for rare ties (log10 of 1e-10 is -10 exactly).
    No gradient: it serves the front end."""
    half_mantissa, exponent = torch.frexp(x.double())  # x = half_mantissa 2^exponent, half_mantissa in [0.5, 1)
    log = (exponent.double() - 1.0) * LOG10_2 + torch.log1p(2.0 * half_mantissa - 1.0) * INV_LN10
    return log.to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------

ZERO_CROSSINGS = 6  # of the sinc on each side (torchaudio's default lowpass_filter_width)
ROLLOFF = 0.99  # cut-off as a share of the lower Nyquist frequency


@functools.lru_cache(maxsize=None)
def sinc_kernel(orig: int, new: int) -> tuple[torch.Tensor, int]:
    """Windowed-sinc (Hann-squared window) polyphase kernel from `orig` to `new` Hz, both divided by
    their gcd: (new, 1, 2 width + orig) float32 and the half-width in input samples."""
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    base = min(orig, new) * ROLLOFF
    width = math.ceil(ZERO_CROSSINGS * orig / base)
    rows = []
    for phase in range(new):
        row = []
        for j in range(-width, width + orig):
            t = (j / orig - phase / new) * base
            t = max(-ZERO_CROSSINGS, min(ZERO_CROSSINGS, t))
            window = math.cos(t * math.pi / ZERO_CROSSINGS / 2) ** 2
            sinc = 1.0 if t == 0 else math.sin(math.pi * t) / (math.pi * t)
            row.append(sinc * window * base / orig)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)[:, None, :].float(), width


def resample(wave: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """(..., n) at `orig` Hz -> (..., ceil(n new / orig)) at `new` Hz, windowed-sinc interpolation
    (the method of `torchaudio.functional.resample`), as one strided convolution."""
    if orig == new:
        return wave
    kernel, width = sinc_kernel(orig, new)
    g = math.gcd(orig, new)
    step = orig // g
    lead, n = wave.shape[:-1], wave.shape[-1]
    x = torch.nn.functional.pad(wave.reshape(-1, 1, n), (width, width + step))
    y = torch.nn.functional.conv1d(x, kernel.to(wave), stride=step)  # (batch, new phases, steps)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    return y[:, : math.ceil(new * n / orig)].reshape(*lead, -1)


def lowpass_biquad(wave: torch.Tensor, sample_rate: int, cutoff: float, q: float = 0.707) -> torch.Tensor:
    """Second-order low-pass filter (the audio-EQ-cookbook biquad of `torchaudio.functional.lowpass_biquad`),
    its coefficients computed with Python's math instead of torch's sin and cos."""
    w0 = 2.0 * math.pi * cutoff / sample_rate
    alpha = math.sin(w0) / 2.0 / q
    cos = math.cos(w0)
    return AF.biquad(wave, (1.0 - cos) / 2.0, 1.0 - cos, (1.0 - cos) / 2.0, 1.0 + alpha, -2.0 * cos, 1.0 - alpha)
