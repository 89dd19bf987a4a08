"""Quality metrics for `ecdc eval`: SI-SNR, the multi-scale mel distance, STOI.

NumPy only, except STOI (pystoi, the `eval` extra). Signals are [frames] or
[frames, channels] float arrays at one sample rate; the reference comes first.
"""
from __future__ import annotations

import typing as tp
import warnings

import numpy as np

SI_SNR_CAP = 150.0      # dB reported for an estimate that equals the reference
MEL_SCALES = range(5, 12)  # windows of 2**5 .. 2**11 samples, as in the EnCodec paper
MEL_BINS = 64
STOI_MIN_SECONDS = 0.4  # pystoi's analysis window: 30 frames, 128 samples apart at 10 kHz (384 ms)
STOI_MIN_RATE = 10_000  # STOI works at 10 kHz; below that the bands it needs are missing
_CHUNK = 1 << 21         # STFT samples (frames x window) computed at a time


def _frames_channels(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


def _pair(reference: np.ndarray, estimate: np.ndarray) -> tp.Tuple[np.ndarray, np.ndarray]:
    ref, est = _frames_channels(reference), _frames_channels(estimate)
    if ref.shape != est.shape:
        raise ValueError(f"reference {ref.shape} and estimate {est.shape} differ in shape")
    return ref, est


def si_snr(reference: np.ndarray, estimate: np.ndarray) -> tp.Optional[float]:
    """Scale-invariant SNR in dB (Le Roux et al., 2019), all channels as one signal.

    Each channel has its mean removed; the estimate is projected on the reference,
    s = (<est, ref> / <ref, ref>) ref, and SI-SNR = 10 log10(|s|^2 / |est - s|^2).
    None for a silent reference; +-SI_SNR_CAP at the extremes (the reference itself, or
    nothing of it).
    """
    ref, est = _pair(reference, estimate)
    ref = ref - ref.mean(axis=0)
    est = est - est.mean(axis=0)
    energy = float(np.sum(ref * ref))
    if energy == 0.0:
        return None
    target = float(np.sum(est * ref)) / energy * ref
    noise = float(np.sum((est - target) ** 2))
    signal = float(np.sum(target * target))
    if signal == 0.0:  # nothing of the reference (a silent estimate too)
        return -SI_SNR_CAP
    if noise == 0.0:
        return SI_SNR_CAP
    return float(np.clip(10 * np.log10(signal / noise), -SI_SNR_CAP, SI_SNR_CAP))


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: tp.Optional[float] = None) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters, centres equally spaced on the HTK mel
    scale from f_min to f_max (default: half the rate), each peaking at 1 (no area
    normalization). Filters narrower than a bin may be all zero at small n_fft."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def _window(n_fft: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann


def _mel_chunks(x: np.ndarray, fb: np.ndarray, n_fft: int, hop: int) -> tp.Iterator[np.ndarray]:
    """The mel magnitude spectrogram of one channel `x` ([frames]), as [chunk, n_mels] pieces.

    Frames are centred: the signal is reflected by n_fft // 2 at both ends, so frame t
    covers samples t * hop - n_fft // 2 ... and there are 1 + len(x) // hop of them. The
    STFT is normalized by the window's root energy, so white noise of variance v has
    expected power v in every bin, whatever the window.
    """
    pad = n_fft // 2
    padded = np.pad(x, pad, mode="reflect" if len(x) > 1 else "constant")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    window = _window(n_fft)
    window /= np.sqrt(np.sum(window ** 2))
    step = max(1, _CHUNK // n_fft)
    for i in range(0, len(frames), step):
        spectrum = np.abs(np.fft.rfft(frames[i:i + step] * window, axis=1))
        yield spectrum @ fb.T


def mel_distance(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """The EnCodec paper's frequency-domain reconstruction term (section 3.4, alpha_i = 1):

        d = 1/7 * sum over i = 5..11 of  mean|S_i(x) - S_i(y)| + sqrt(mean (S_i(x) - S_i(y))^2)

    S_i is a 64-bin mel magnitude spectrogram of a normalized STFT with a Hann window of
    2**i samples and a hop of 2**i / 4 (`_mel_chunks`), every channel, at the
    signals' own rate. Unlike the paper's sums, the norms are divided by the number of
    entries (L1 becomes the mean, L2 the root mean square), so that the value does not
    grow with duration. 0 for identical signals; in the units of the spectrogram, so it
    scales with the signals' level.
    """
    ref, est = _pair(reference, estimate)
    terms = []
    for i in MEL_SCALES:
        n_fft, hop = 2 ** i, 2 ** i // 4
        fb = mel_filterbank(sample_rate, n_fft, MEL_BINS)
        l1 = l2 = count = 0.0
        for c in range(ref.shape[1]):
            for a, b in zip(_mel_chunks(ref[:, c], fb, n_fft, hop), _mel_chunks(est[:, c], fb, n_fft, hop)):
                d = a - b
                l1 += float(np.abs(d).sum())
                l2 += float((d * d).sum())
                count += d.size
        terms.append(l1 / count + np.sqrt(l2 / count))
    return float(np.mean(terms))


def mel_db(x: np.ndarray, sample_rate: int, n_mels: int = 128) -> tp.Tuple[np.ndarray, int]:
    """A mel spectrogram to look at: the channels' mean, a window of about 40 ms (a power
    of two) and a hop of a quarter of it, magnitudes in dB (floor -100 dB).
    Returns ([frames, n_mels], hop in samples)."""
    n_fft = 2 ** int(round(np.log2(0.04 * sample_rate)))
    hop = n_fft // 4
    mono = _frames_channels(x).mean(axis=1)
    fb = mel_filterbank(sample_rate, n_fft, n_mels)
    mags = np.concatenate(list(_mel_chunks(mono, fb, n_fft, hop)))
    return (20 * np.log10(np.maximum(mags, 1e-5))).astype(np.float32), hop


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> tp.Optional[float]:
    """STOI (Taal et al., 2011) by pystoi, on the channels' mean; meaningful for speech.

    None below 10 kHz, for a silent reference, or when under about 0.4 s of the reference
    is above pystoi's silence threshold (pystoi fails outright on a few milliseconds).
    """
    if sample_rate < STOI_MIN_RATE:
        return None
    from pystoi import stoi as _stoi

    ref, est = _pair(reference, estimate)
    if len(ref) < STOI_MIN_SECONDS * sample_rate or not np.any(ref):
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = _stoi(ref.mean(axis=1), est.mean(axis=1), sample_rate)
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return None
    return float(value)
