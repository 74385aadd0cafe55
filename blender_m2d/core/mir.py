"""numpy/scipy ports of the librosa 0.11 routines the song analysis uses.

Why: librosa compiles its beat tracker, peak picker, local-max and shear helpers with numba.
In a fresh process that costs ~3 s before the first analysis even with numba's on-disk cache
warm, and ~24 s on a machine that has never run it (measured, docs/analysis.md) -- the first
click in Blender would freeze for that long. These ports do the same arithmetic without numba
or scikit-learn; ``tests/unit/test_mir.py`` checks each against librosa on real songs (beat
and onset frames identical, spectra and envelopes equal to float precision).

Ported (librosa 0.11.0 defaults unless noted):

* :func:`mel_filterbank` -- ``filters.mel`` (Slaney scale and norm);
* :func:`power_to_db` -- ``power_to_db``;
* :func:`onset_strength` -- ``onset.onset_strength(S=...)`` (lag 1, mean over bands, centred);
* :func:`estimate_tempo` -- ``feature.tempo`` (mean autocorrelation tempogram, log-normal
  prior around 120 bpm), computed in blocks so memory stays bounded;
* :func:`beat_track` -- ``beat.beat_track`` given an onset envelope (dynamic programme of
  Ellis 2007, tightness 100), vectorised over blocks of half a beat;
* :func:`onset_detect` -- ``onset.onset_detect`` (normalised envelope, ``util.peak_pick``);
* :func:`mfcc` -- ``feature.mfcc(S=log_mel)``;
* :func:`recurrence_affinity` -- ``segment.recurrence_matrix(mode="affinity", sym=True)``
  (dense; mutual k-nearest neighbours, median k-distance bandwidth);
* :func:`timelag_median` -- ``segment.timelag_filter(scipy.ndimage.median_filter)``;
* :func:`sync_median` -- ``util.sync(..., aggregate=np.median)`` over beat segments.
"""

from __future__ import annotations

import itertools

import numpy as np

_TINY = np.finfo(np.float64).tiny


# ---------------------------------------------------------------------------------------------
# spectra


def hann(n: int) -> np.ndarray:
    """Periodic Hann window of length ``n`` (``scipy.signal.get_window("hann", n)``)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz,
                    min_log_mel + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep,
                    f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)),
                    f_sp * m)


def mel_frequencies(n_mels: int, *, fmin: float = 0.0, fmax: float) -> np.ndarray:
    """Centre frequencies (Hz) of ``n_mels`` points evenly spaced on the Slaney mel scale."""
    return _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels))


def mel_filterbank(*, sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-normalised triangular mel filters [shape=(n_mels, 1 + n_fft // 2)], 0..sr/2."""
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_frequencies(n_mels + 2, fmax=sr / 2.0)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


def chroma_filterbank(*, sr: int, n_fft: int, n_chroma: int = 12) -> np.ndarray:
    """``librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=0.0)``, shape (n_chroma, 1 + n_fft // 2).

    Gaussian bumps around each pitch class (A = 440 Hz, no tuning estimate), each FFT bin's
    column L2-normalised, then weighted by a Gaussian over octaves centred on octave 5 with a
    2-octave width; C first.
    """
    frequencies = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    frqbins = n_chroma * np.log2(frequencies / (440.0 / 16))
    # the 0 Hz bin: 1.5 octaves below bin 1, so it is spread over all pitch classes
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidth = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1.0]))
    half = np.round(n_chroma / 2)
    d = np.subtract.outer(frqbins, np.arange(n_chroma, dtype=np.float64)).T
    d = np.remainder(d + half + 10 * n_chroma, n_chroma) - half
    wts = np.exp(-0.5 * (2 * d / binwidth[None, :]) ** 2)
    wts /= np.sqrt((wts ** 2).sum(axis=0, keepdims=True))
    wts *= np.exp(-0.5 * ((frqbins / n_chroma - 5.0) / 2.0) ** 2)[None, :]
    wts = np.roll(wts, -3 * (n_chroma // 12), axis=0)
    return np.ascontiguousarray(wts[:, :1 + n_fft // 2]).astype(np.float32)


def power_to_db(s: np.ndarray, *, ref: float = 1.0, amin: float = 1e-10,
                top_db: float | None = 80.0) -> np.ndarray:
    """``10 log10(max(amin, S) / max(amin, ref))``, floored ``top_db`` below its maximum."""
    s = np.asarray(s)
    log_spec = 10.0 * np.log10(np.maximum(amin, s))
    log_spec -= 10.0 * np.log10(max(amin, ref))
    if top_db is not None and log_spec.size:
        log_spec = np.maximum(log_spec, log_spec.max() - top_db)
    return log_spec


def onset_strength(s_db: np.ndarray, *, n_fft: int = 2048, hop_length: int = 512) -> np.ndarray:
    """Spectral-flux onset envelope [shape=(T,)] of a (bands, T) dB spectrogram.

    Mean over bands of ``max(0, S[:, t] - S[:, t-1])``, shifted right by
    ``1 + n_fft // (2 * hop_length)`` frames (librosa's centring) and cut to T frames.
    """
    s_db = np.asarray(s_db)
    flux = np.maximum(0.0, s_db[:, 1:] - s_db[:, :-1]).mean(axis=0)
    pad = 1 + n_fft // (2 * hop_length)
    return np.concatenate([np.zeros(pad, dtype=flux.dtype), flux])[: s_db.shape[1]]


def mfcc(log_mel: np.ndarray, *, n_mfcc: int = 20) -> np.ndarray:
    """MFCCs [shape=(n_mfcc, T)]: orthonormal DCT-II of a (bands, T) dB spectrogram."""
    import scipy.fft

    return scipy.fft.dct(log_mel, axis=0, type=2, norm="ortho")[:n_mfcc]


# ---------------------------------------------------------------------------------------------
# tempo and beats


def estimate_tempo(onset_env: np.ndarray, *, sr: int, hop_length: int, start_bpm: float = 120.0,
                   std_bpm: float = 1.0, ac_size_s: float = 8.0, max_tempo: float = 320.0,
                   block: int = 2048) -> float:
    """Global tempo (bpm) as ``librosa.feature.tempo`` with its defaults.

    Local autocorrelations of ``ac_size_s`` windows (Hann, centred, linear-ramp padding), each
    max-normalised, averaged over time; the lag maximising ``log1p(1e6 * mean) + log-normal
    prior`` wins.
    """
    import scipy.fft

    x = np.asarray(onset_env, dtype=np.float64)
    n = x.size
    win = int(np.floor(ac_size_s * sr / hop_length))
    half = win // 2
    padded = np.pad(x, (half, half), mode="linear_ramp", end_values=(0, 0))
    window = hann(win)
    n_pad = scipy.fft.next_fast_len(2 * win - 1, real=True)
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[:n]
    total = np.zeros(win)
    for s in range(0, n, block):
        seg = frames[s:s + block] * window  # (b, win)
        ac = scipy.fft.irfft(np.abs(scipy.fft.rfft(seg, n=n_pad, axis=1)) ** 2, n=n_pad,
                             axis=1)[:, :win]
        norm = np.abs(ac).max(axis=1, keepdims=True)
        ac = np.where(norm >= _TINY, ac / np.where(norm >= _TINY, norm, 1.0), ac)
        total += ac.sum(axis=0)
    tg = total / max(n, 1)
    bpms = np.full(win, np.inf)
    bpms[1:] = 60.0 * sr / (hop_length * np.arange(1.0, win))
    with np.errstate(divide="ignore"):
        logprior = -0.5 * ((np.log2(bpms) - np.log2(start_bpm)) / std_bpm) ** 2
    logprior[: int(np.argmax(bpms < max_tempo))] = -np.inf
    return float(bpms[int(np.argmax(np.log1p(1e6 * tg) + logprior))])


def beat_track(onset_env: np.ndarray, *, sr: int, hop_length: int, bpm: float | None = None,
               tightness: float = 100.0, trim: bool = True) -> tuple[float, np.ndarray]:
    """``librosa.beat.beat_track(onset_envelope=...)``: (tempo bpm, beat frame indices)."""
    x = np.asarray(onset_env, dtype=np.float64)
    if not x.any():
        return 0.0, np.zeros(0, dtype=int)
    if bpm is None:
        bpm = estimate_tempo(x, sr=sr, hop_length=hop_length)
    fpb = float(np.round(sr / hop_length * 60.0 / bpm))
    norm = x / (x.std(ddof=1) + _TINY)
    k = np.arange(-fpb, fpb + 1)
    window = np.exp(-0.5 * (k * 32.0 / fpb) ** 2)
    # scipy/librosa "same" (length of the envelope); np.convolve's "same" has the length of the
    # longer input, so an envelope shorter than the window (a song under ~2 s) overran `beats`
    localscore = np.convolve(norm, window, mode="full")[(window.size - 1) // 2:][:x.size]
    backlink, cumscore = _beat_dp(localscore, fpb, tightness)
    beats = np.zeros(x.size, dtype=bool)
    n = _last_beat(cumscore)
    while n >= 0:
        beats[n] = True
        n = backlink[n]
    beats = _trim_beats(localscore, beats, trim)
    return float(bpm), np.flatnonzero(beats)


def _beat_dp(localscore: np.ndarray, fpb: float, tightness: float):
    """Ellis's DP, vectorised over blocks of ``round(fpb / 2)`` frames (their predecessors all
    lie before the block). Ties go to the latest predecessor, as in librosa's loop."""
    n = localscore.size
    backlink = np.full(n, -1, dtype=np.int64)
    cumscore = np.zeros(n)
    near = int(np.round(fpb / 2))
    far = int(2 * fpb)
    # candidate offsets i - loc, ascending: latest predecessor first (librosa's scan order)
    offsets = np.arange(near, far + 1)
    penalty = tightness * (np.log(offsets) - np.log(fpb)) ** 2
    thresh = 0.01 * localscore.max()
    first_beat = True
    step = max(near, 1)
    for start in range(0, n, step):
        idx = np.arange(start, min(start + step, n))
        loc = idx[:, None] - offsets[None, :]
        valid = loc >= 0
        score = np.where(valid, cumscore[np.maximum(loc, 0)] - penalty[None, :], -np.inf)
        best = np.argmax(score, axis=1)
        has = valid[np.arange(idx.size), best]
        best_score = score[np.arange(idx.size), best]
        best_loc = np.where(has, loc[np.arange(idx.size), best], -1)
        cumscore[idx] = localscore[idx] + np.where(has, best_score, 0.0)
        if first_beat:
            for j, i in enumerate(idx):
                if first_beat and localscore[i] < thresh:
                    backlink[i] = -1
                else:
                    backlink[i] = best_loc[j]
                    first_beat = False
        else:
            backlink[idx] = best_loc
    return backlink, cumscore


def _localmax(x: np.ndarray) -> np.ndarray:
    out = np.zeros(x.size, dtype=bool)
    if x.size >= 3:
        out[1:-1] = (x[1:-1] > x[:-2]) & (x[1:-1] >= x[2:])
    if x.size >= 2:
        out[-1] = x[-1] > x[-2]
    return out


def _last_beat(cumscore: np.ndarray) -> int:
    peaks = _localmax(cumscore)
    if not peaks.any():
        return cumscore.size - 1
    threshold = 0.5 * float(np.median(cumscore[peaks]))
    ok = np.flatnonzero(peaks & (cumscore >= threshold))
    return int(ok[-1]) if ok.size else cumscore.size - 1


def _trim_beats(localscore: np.ndarray, beats: np.ndarray, trim: bool) -> np.ndarray:
    out = beats.copy()
    if trim:
        w = np.hanning(5)
        smooth = np.convolve(localscore[beats], w)[len(w) // 2:len(localscore) + len(w) // 2]
        threshold = 0.5 * float(np.mean(smooth ** 2) ** 0.5)
    else:
        threshold = 0.0
    above = np.flatnonzero(localscore > threshold)
    if above.size == 0:
        return np.zeros_like(out)
    out[: above[0]] = False
    out[above[-1] + 1:] = False
    return out


# ---------------------------------------------------------------------------------------------
# onsets


def onset_detect(onset_env: np.ndarray, *, sr: int, hop_length: int) -> np.ndarray:
    """Onset frames as ``librosa.onset.onset_detect`` with its default peak picking."""
    x = np.asarray(onset_env, dtype=np.float64)
    x = x - x.min()
    x = x / (x.max() + _TINY)
    if not x.any() or not np.all(np.isfinite(x)):
        return np.zeros(0, dtype=int)
    pre_max = int(np.ceil(0.03 * sr // hop_length))
    post_max = int(np.ceil(0.00 * sr // hop_length + 1))
    pre_avg = int(np.ceil(0.10 * sr // hop_length))
    post_avg = int(np.ceil(0.10 * sr // hop_length + 1))
    wait = int(np.ceil(0.03 * sr // hop_length))
    return peak_pick(x, pre_max=pre_max, post_max=post_max, pre_avg=pre_avg,
                     post_avg=post_avg, delta=float(np.float32(0.07)), wait=wait)


def peak_pick(x: np.ndarray, *, pre_max: int, post_max: int, pre_avg: int, post_avg: int,
              delta: float, wait: int) -> np.ndarray:
    """``librosa.util.peak_pick`` (sparse): indices of peaks.

    ``x[n]`` is a peak if it is the maximum of ``x[n - pre_max : n + post_max]``, at least
    ``delta`` above the mean of ``x[n - pre_avg : n + post_avg]`` (windows clipped to the
    array), and more than ``wait`` frames after the previous peak.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n == 0:
        return np.zeros(0, dtype=int)
    i = np.arange(n)
    padded = np.concatenate([np.full(pre_max, -np.inf), x, np.full(post_max, -np.inf)])
    win_max = np.lib.stride_tricks.sliding_window_view(padded, pre_max + post_max)[:n].max(1)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    lo_a, hi_a = np.maximum(0, i - pre_avg), np.minimum(n, i + post_avg)
    win_mean = (csum[hi_a] - csum[lo_a]) / (hi_a - lo_a)
    cand = (x == win_max) & (x >= win_mean + delta)
    # the first frame's windows start at 0 (same formula); librosa special-cases it with
    # >= max instead of ==, which is the same test
    peaks = []
    last = -np.inf
    for c in np.flatnonzero(cand):
        if c > last + wait:
            peaks.append(c)
            last = c
    return np.asarray(peaks, dtype=int)


# ---------------------------------------------------------------------------------------------
# structure


def recurrence_affinity(data: np.ndarray, *, width: int = 3, k: int | None = None) -> np.ndarray:
    """Dense affinity recurrence [shape=(t, t)] of feature columns ``data`` [shape=(d, t)].

    As ``librosa.segment.recurrence_matrix(data, width=width, mode="affinity", sym=True)``:
    each point links to its ``k = 2 ceil(sqrt(t - 2 width + 1))`` nearest neighbours (Euclidean)
    outside the band ``|i - j| < width``; only mutual links survive; a link at distance ``d``
    gets ``exp(-d / bw)`` with ``bw`` the median over points of the distance to their farthest
    surviving (<= k) neighbour.
    """
    x = np.asarray(data, dtype=np.float64).T  # (t, d)
    t = x.shape[0]
    if k is None:
        k = int(2 * np.ceil(np.sqrt(t - 2 * width + 1)))
    sq = (x * x).sum(axis=1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0))
    n_neighbors = min(t - 1, k + 2 * width)
    d_nb = dist.copy()
    np.fill_diagonal(d_nb, np.inf)
    # kneighbors: n_neighbors nearest (self excluded), then drop the band, keep k nearest
    order = np.argsort(d_nb, axis=1, kind="stable")[:, :n_neighbors]
    rows = np.repeat(np.arange(t), n_neighbors)
    cols = order.ravel()
    keep = np.abs(rows - cols) >= width
    linked = np.zeros((t, t), dtype=bool)
    rows, cols = rows[keep], cols[keep]
    # rank within each row among the kept links (order is already ascending by distance)
    counts = np.bincount(rows, minlength=t)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(rows.size) - np.repeat(starts, counts)
    sel = rank < k
    linked[rows[sel], cols[sel]] = True
    linked &= dist > 0  # librosa's sparse matrix drops zero distances
    linked &= linked.T
    rec = np.where(linked, dist, 0.0)
    kth = np.full(t, np.nan)
    for i in range(t):
        d = np.sort(rec[i][linked[i]])[:k]
        if d.size:
            kth[i] = d[-1]
    if not np.any(np.isfinite(kth)):
        return np.zeros((t, t))
    bw = float(np.nanmedian(kth))
    return np.where(linked, np.exp(-rec / bw), 0.0)


def timelag_median(rec: np.ndarray, *, width: int = 7) -> np.ndarray:
    """Median filter along time in time-lag space (``timelag_filter(median_filter)``,
    ``size=(1, width)``): smooths along the diagonals of a recurrence matrix."""
    import scipy.ndimage

    t = rec.shape[0]
    padded = np.concatenate([rec, np.zeros_like(rec)], axis=0)  # (2t, t)
    r = np.arange(2 * t)[:, None]
    c = np.arange(t)[None, :]
    lag = padded[(r + c) % (2 * t), c]
    lag = scipy.ndimage.median_filter(lag, size=(1, width))
    back = lag[(r - c) % (2 * t), c]
    return back[:t]


def sync_median(data: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Median of ``data`` [shape=(d, T)] over each segment ``[bounds[i], bounds[i+1])``."""
    out = np.empty((data.shape[0], bounds.size - 1), dtype=data.dtype)
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        out[:, i] = np.median(data[:, a:b], axis=1)
    return out


def sync_mean(data: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Mean of ``data`` [shape=(d, T)] over each segment ``[bounds[i], bounds[i+1])``."""
    csum = np.concatenate([np.zeros((data.shape[0], 1)),
                           np.cumsum(data, axis=1, dtype=np.float64)], axis=1)
    return (csum[:, bounds[1:]] - csum[:, bounds[:-1]]) / np.diff(bounds)[None, :]
