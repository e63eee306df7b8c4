"""thadcr.data.audio_io: reading, downmix, resampling, bad inputs, silence, pad/crop."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from thadcr.data.audio_io import (
    AudioError,
    crop_offset,
    fit_length,
    is_silent,
    load_audio,
    read_audio,
    rms_db,
    show_path,
)


def _sine(freq, seconds, rate, amp=0.5):
    t = np.arange(int(round(seconds * rate)), dtype=np.float64) / rate
    return amp * np.sin(2 * np.pi * freq * t)


# ----------------------------------------------------------------------------- bad inputs
def test_missing_file_names_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="nope.wav': file not found") as info:
        load_audio(path)
    assert info.value.path == str(path) and info.value.reason == "file not found"


def test_messages_show_the_path_unambiguously(tmp_path):
    path = tmp_path / " two  spaces .wav"  # a published Clotho name can look like this
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert str(info.value).startswith(f"'{path}': file not found. ") and info.value.path == str(path)
    assert show_path(path) == repr(str(path)) and show_path("tab\there") == "'tab\\there'"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty.wav': empty file \(0 bytes\)"):
        load_audio(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    sf.write(path, _sine(440, 0.1, 32000), 32000)
    raw = bytearray(path.read_bytes())
    raw[8:16] = b"XXXXXXXX"  # destroy the WAVE/fmt header
    path.write_bytes(bytes(raw))
    with pytest.raises(AudioError, match="corrupt.wav': not readable as audio") as info:
        load_audio(path)
    assert "Replace it" in str(info.value)


def test_text_file_renamed_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 10)
    with pytest.raises(AudioError, match="notes.wav': not readable as audio"):
        load_audio(path)


def test_zero_length_audio(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0,), dtype=np.float32), 32000)
    assert path.stat().st_size > 0  # a valid header with no samples
    with pytest.raises(AudioError, match="zero.wav': zero-length audio"):
        load_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_samples(tmp_path, bad):
    wave = _sine(440, 0.1, 32000).astype(np.float32)
    wave[[5, 17]] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, wave, 32000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"bad.wav': 2 NaN/Inf sample\(s\)"):
        load_audio(path)


# ----------------------------------------------------------------------------- reading
@pytest.mark.parametrize("rate", [8000, 32000, 44100, 48000])
def test_any_rate_resampled_to_32k(tmp_path, rate):
    path = tmp_path / f"sine_{rate}.wav"
    sf.write(path, _sine(440.0, 0.5, rate), rate, subtype="FLOAT")
    wave = load_audio(path, 32000)
    n = int(round(0.5 * rate))
    assert wave.dtype == torch.float32 and wave.shape == (math.ceil(n * 32000 / rate),)
    # the same tone, written at 32 kHz, away from the filter's edge effects
    expected = _sine(440.0, 0.5, 32000)
    inner = slice(200, len(expected) - 200)
    assert np.abs(wave.numpy()[inner] - expected[inner]).max() < 5e-3


@pytest.mark.parametrize("suffix, rate", [(".wav", 44100), (".flac", 48000), (".ogg", 22050), (".mp3", 16000),
                                          (".MP3", 32000)])
def test_every_download_format_is_read(tmp_path, suffix, rate):
    """A download keeps the format it got: WAV, FLAC, OGG Vorbis and MP3 all read (soundfile's libsndfile)."""
    path = tmp_path / f"tone{suffix}"
    tone = _sine(440.0, 1.0, rate, amp=0.5)
    sf.write(path, tone, rate, format=suffix[1:].upper())
    data, file_rate = read_audio(path)
    assert file_rate == rate and abs(data.shape[0] - rate) <= rate // 20  # lossy codecs may pad a little
    wave = load_audio(path, 32000).double().numpy()
    expected = _sine(440.0, 1.0, 32000, amp=0.5)
    inner = slice(3200, 28800)  # away from codec and filter edges
    lag = int(np.argmax(np.correlate(wave[inner], expected[inner][:800], "valid")[:100]))  # codec delay
    assert np.corrcoef(wave[3200 + lag : 28800 + lag][: 25600 - 100], expected[inner][: 25600 - 100])[0, 1] > 0.99


def test_pcm16_scaled_to_unit_range(tmp_path):
    path = tmp_path / "pcm.wav"
    ref = _sine(1000.0, 0.05, 32000, amp=0.9)
    sf.write(path, ref, 32000, subtype="PCM_16")
    wave = load_audio(path, 32000).double().numpy()
    assert np.abs(wave - ref).max() <= 1.0 / 32768 + 1e-9


def test_stereo_downmix_is_channel_mean(tmp_path):
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, size=(800, 2))
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 32000, subtype="DOUBLE")
    wave = load_audio(path, 32000)
    expected = [(stereo[i, 0] + stereo[i, 1]) / 2.0 for i in range(stereo.shape[0])]  # literal mean
    np.testing.assert_allclose(wave.double().numpy(), expected, atol=1e-6)
    data, rate = read_audio(path)
    assert data.shape == (800, 2) and rate == 32000


# ----------------------------------------------------------------------------- silence
def test_rms_db_literal():
    wave = torch.tensor([0.5, -0.25, 0.125, 0.0])
    power = sum(float(x) ** 2 for x in wave) / 4
    assert rms_db(wave) == pytest.approx(10 * math.log10(power), abs=1e-9)
    assert rms_db(torch.zeros(10)) == -math.inf


def test_silence_detection(tmp_path):
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(32000)
    noise /= np.sqrt(np.mean(noise**2))  # RMS 1 = 0 dBFS
    quiet = torch.from_numpy(noise * 10 ** (-90 / 20))
    audible = torch.from_numpy(noise * 10 ** (-70 / 20))
    assert is_silent(torch.zeros(32000))
    assert is_silent(quiet) and not is_silent(audible)
    assert is_silent(audible, threshold_db=-60.0)
    # silence is not an error at load time
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(3200), 32000)
    assert is_silent(load_audio(path))


# ----------------------------------------------------------------------------- pad / crop
def test_too_short_is_zero_padded_at_end():
    wave = torch.arange(1, 6, dtype=torch.float32)
    for mode in ("random", "start", "center"):
        out = fit_length(wave, 8, mode)
        assert out.tolist() == [1, 2, 3, 4, 5, 0, 0, 0]


def test_too_long_deterministic_crops():
    wave = torch.arange(10, dtype=torch.float32)
    assert fit_length(wave, 4, "start").tolist() == [0, 1, 2, 3]
    assert fit_length(wave, 4, "center").tolist() == [3, 4, 5, 6]  # (10 - 4) // 2 = 3
    assert fit_length(wave, 10, "random").tolist() == wave.tolist()


def test_random_crop_covers_every_offset_and_is_seeded():
    wave = torch.arange(10, dtype=torch.float32)
    starts = set()
    for seed in range(200):
        out = fit_length(wave, 5, "random", torch.Generator().manual_seed(seed))
        start = int(out[0])
        assert out.tolist() == list(range(start, start + 5))  # a contiguous window
        starts.add(start)
        again = fit_length(wave, 5, "random", torch.Generator().manual_seed(seed))
        assert torch.equal(out, again)
    assert starts == set(range(6))


def test_crop_errors():
    with pytest.raises(ValueError, match="crop mode 'middle'"):
        fit_length(torch.zeros(10), 4, "middle")
    with pytest.raises(ValueError, match="crop mode 'middle'"):
        fit_length(torch.zeros(2), 4, "middle")
    with pytest.raises(ValueError, match="mono waveform"):
        fit_length(torch.zeros(2, 10), 4, "start")
    with pytest.raises(ValueError, match="cannot take 5"):
        crop_offset(4, 5, "start")
