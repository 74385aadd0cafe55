"""A synthetic music-to-dance dataset whose labels follow a known, learnable rule.

K = ``n_styles * per_style`` dance phrases; class (s, m) belongs to style s. A music phrase of
class (s, m) is a 128x128 (time, mel) image: a harmonic comb whose spacing is set by the style,
pulsed in time with a period set by the member, plus noise. Melody and rhythm targets follow the
comb's fundamental and the pulse onsets, so pre-training has real structure to learn.

Songs are label sequences with a rule the unlabelled songs reveal: the next phrase is usually
the *successor* member of the same style ((s, m) -> (s, m+1 mod per_style)). Some phrases are
*ambiguous*: they also carry the pulse pattern of another member of the same style, so a
classifier alone can only guess between two classes, while the transition matrix learned from
unlabelled sequences resolves the tie. The style-only prior M0 cannot (both candidates share
the style); this is what co-ascent has to discover from unlabelled songs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import TEST, TRAIN, UNLABELLED, VAL, PhraseData, PhraseSpace, phrase_list_hash

SPACINGS = (4, 9, 18, 36, 50, 64)
PERIODS = (6, 12, 24, 48, 9, 18)
LEVELS = (0.25, 0.5, 0.7, 0.95, 0.35, 0.8)


@dataclass(frozen=True)
class SyntheticSpec:
    n_styles: int = 4
    per_style: int = 4
    phrases_per_song: int = 8
    train_songs: int = 12          # labelled
    val_songs: int = 0
    test_songs: int = 30           # labelled, held out
    unlabelled_songs: int = 120
    p_successor: float = 0.85      # next = successor member of the same style
    p_switch: float = 0.05         # next = random class of another style (else same style)
    p_faded: float = 0.4           # phrase shows its style but not its member
    noise: float = 0.25
    seed: int = 0

    @property
    def k(self) -> int:
        return self.n_styles * self.per_style


def phrase_space(spec: SyntheticSpec) -> PhraseSpace:
    ids = [f"s{s}_m{m}" for s in range(spec.n_styles) for m in range(spec.per_style)]
    styles = [f"style{s}" for s in range(spec.n_styles) for _ in range(spec.per_style)]
    st = np.asarray(styles)
    sim = (st[:, None] == st[None, :]).astype(np.float32)
    return PhraseSpace(tuple(ids), phrase_list_hash(ids, list(styles), [None] * len(ids)),
                       tuple(styles), sim, "synthetic")


def _sequence(rng: np.random.Generator, spec: SyntheticSpec) -> list[int]:
    s, m = int(rng.integers(spec.n_styles)), int(rng.integers(spec.per_style))
    out = [s * spec.per_style + m]
    for _ in range(spec.phrases_per_song - 1):
        r = rng.random()
        if r < spec.p_successor:
            m = (m + 1) % spec.per_style
        elif r < spec.p_successor + spec.p_switch:
            s = int((s + 1 + rng.integers(spec.n_styles - 1)) % spec.n_styles)
            m = int(rng.integers(spec.per_style))
        else:
            m = int((m + 1 + rng.integers(spec.per_style - 1)) % spec.per_style)
        out.append(s * spec.per_style + m)
    return out


def _pulses(rng: np.random.Generator, period: int, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    phase = rng.integers(period)
    pos = (t - phase) % period
    env = np.exp(-pos / 3.0)
    onsets = (pos == 0).astype(np.uint8)
    return env, onsets


def render(rng: np.random.Generator, spec: SyntheticSpec, cls: int, faded: bool
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One phrase: mel (128, 128) float16 (time, mel), melody (128,), rhythm (128,).

    The style sets the comb spacing, the member the pulse period and loudness; a *faded*
    phrase keeps the style's comb but loses the member's pulses (flat, medium loudness)."""
    s, m = divmod(cls, spec.per_style)
    t = np.arange(128)
    f = np.arange(128)
    spacing = SPACINGS[s % len(SPACINGS)]
    base = int(rng.integers(4, 20))
    comb = np.zeros(128)
    for h in range(base, 128, spacing):
        comb += np.exp(-0.5 * ((f - h) / 1.2) ** 2) * (0.6 + 0.4 * np.exp(-(h - base) / 60))
    if faded:
        env, onsets, level = np.full(128, 0.6), np.zeros(128, np.uint8), 0.55
    else:
        env, onsets = _pulses(rng, PERIODS[m % len(PERIODS)], t)
        level = LEVELS[m % len(LEVELS)]
    img = 0.1 + level * env[:, None] * np.clip(comb, 0, 1)[None, :]
    img = img + rng.normal(0, spec.noise, img.shape)
    mel = np.clip(img, 0, 1).astype(np.float16)
    melody = np.where(env > 0.3, (base + 20) / 128.0, 0.0).astype(np.float16)
    return mel, melody, onsets


def make_dataset(spec: SyntheticSpec | None = None) -> PhraseData:
    """Render the whole synthetic dataset in memory (songs in order, phrases in song order).

    The true classes of the unlabelled phrases are kept in ``data.hidden_truth`` (analysis
    only; training never reads it)."""
    spec = spec or SyntheticSpec()
    rng = np.random.default_rng(spec.seed)
    plan = ([TRAIN] * spec.train_songs + [VAL] * spec.val_songs + [TEST] * spec.test_songs
            + [UNLABELLED] * spec.unlabelled_songs)
    mels, melodies, rhythms, labels, splits, songs_idx, starts = [], [], [], [], [], [], []
    truth = []
    songs = []
    for si, split in enumerate(plan):
        songs.append(f"song{si:04d}")
        for j, cls in enumerate(_sequence(rng, spec)):
            mel, melody, rhythm = render(rng, spec, cls, bool(rng.random() < spec.p_faded))
            mels.append(mel)
            melodies.append(melody)
            rhythms.append(rhythm)
            labels.append(cls if split != UNLABELLED else -1)
            truth.append(cls)
            splits.append(split)
            songs_idx.append(si)
            starts.append(j * 4.0)
    start = np.asarray(starts, np.float32)
    data = PhraseData(np.stack(mels), np.stack(melodies), np.stack(rhythms),
                      np.asarray(labels, np.int64), np.asarray(splits, np.int8),
                      np.asarray(songs_idx, np.int32), start, start + 4.0, songs,
                      phrase_space(spec), None, {"synthetic": True})
    data.hidden_truth = np.asarray(truth, np.int64)
    return data
