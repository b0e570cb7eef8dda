"""A procedural "speech-like" sequence dataset: spoken words as frames of spectral features.

Real speech corpora used in the inference literature (CREMA-D with openSMILE
features, for instance) are large downloads. ``voices`` is a small, documented
stand-in with the same structure: each record is a short utterance of one of a few
words, represented as ``frames`` time frames of ``bands`` log-energies (a coarse
spectrogram), spoken by one of several speakers.

How a record is made:

* Each word has a fixed template (drawn once from a fixed seed, the same on every
  machine): two formant tracks, that is, frequency bands whose position glides over
  the utterance, and an energy envelope.
* Each speaker has a voice drawn once: a sex (half the speakers each), a pitch band
  and a formant shift that are higher for the speakers coded ``female`` (as vocal
  tracts are shorter on average), plus a personal offset, a speaking rate and a
  loudness.
* An utterance warps the word's template in time by the speaker's rate, shifts its
  formants by the speaker's shift, adds a pitch harmonic and noise, and takes the
  log of the energies.

The label is the word; the sensitive attribute ``sex`` is the speaker's simulated
sex (a pitch/formant shift, nothing more); ``users`` holds the speaker id.
"""
from __future__ import annotations

import torch

from .registry import Dataset, DatasetInfo, register_dataset

__all__ = ["WORDS", "make_voices"]

WORDS = ("yes", "no", "stop", "go")
_TEMPLATE_SEED = 20240917


def _word_templates(num_words: int, bands: int):
    g = torch.Generator().manual_seed(_TEMPLATE_SEED)
    # two formant tracks per word: start and end band positions (in [0, 1] of the band range)
    f1 = 0.10 + 0.30 * torch.rand(num_words, 2, generator=g)            # low formant, start/end
    f2 = 0.45 + 0.35 * torch.rand(num_words, 2, generator=g)            # high formant, start/end
    peak = 0.3 + 0.4 * torch.rand(num_words, generator=g)               # where the energy peaks
    return f1 * (bands - 1), f2 * (bands - 1), peak


def make_voices(n: int = 2000, *, frames: int = 20, bands: int = 16, num_speakers: int = 10,
                num_words: int = len(WORDS), seed: int = 0) -> Dataset:
    """Generate the ``voices`` dataset (see the module docstring for how a record is made).

    Returns a :class:`~leaklab.data.Dataset` of ``n`` records of shape
    ``(frames, bands)`` (standardised log-energies), labels = the word, attribute
    ``sex`` (0 ``female``, 1 ``male``; even speaker ids are female) and ``users`` = the
    speaker. Everything is drawn from ``seed``, except the word templates, which are
    fixed.
    """
    for name, v, lo in (("n", n, 1), ("frames", frames, 4), ("bands", bands, 8),
                        ("num_speakers", num_speakers, 2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if not isinstance(num_words, int) or not 2 <= num_words <= len(WORDS):
        raise ValueError(f"num_words must be an int in [2, {len(WORDS)}], got {num_words!r}")
    f1, f2, peak = _word_templates(num_words, bands)
    g = torch.Generator().manual_seed(seed)
    # speaker voices, drawn once per speaker
    sex = (torch.arange(num_speakers) % 2).long()                        # 0 female, 1 male
    female = (sex == 0).float()
    pitch = 1.0 + 1.5 * female + 0.4 * torch.randn(num_speakers, generator=g)      # band of the pitch harmonic
    shift = -0.6 + 1.2 * female + 0.35 * torch.randn(num_speakers, generator=g)     # formant shift (bands)
    rate = 0.85 + 0.3 * torch.rand(num_speakers, generator=g)                       # speaking rate
    loud = 0.8 + 0.4 * torch.rand(num_speakers, generator=g)
    # utterances
    users = torch.randint(num_speakers, (n,), generator=g)
    y = torch.randint(num_words, (n,), generator=g)
    t = torch.linspace(0, 1, frames)[None]                               # (1, frames)
    tau = (t * rate[users, None] + 0.05 * torch.randn(n, 1, generator=g)).clamp(0, 1)   # (n, frames)
    s = shift[users, None] + 0.2 * torch.randn(n, 1, generator=g)
    track1 = f1[y, :1] + (f1[y, 1:] - f1[y, :1]) * tau + s               # (n, frames)
    track2 = f2[y, :1] + (f2[y, 1:] - f2[y, :1]) * tau + 1.5 * s
    env = torch.exp(-((tau - peak[y, None]) ** 2) / (2 * 0.25**2)) * loud[users, None]
    b = torch.arange(bands, dtype=torch.float32)[None, None]             # (1, 1, bands)
    bump = lambda centre, width: torch.exp(-((b - centre[..., None]) ** 2) / (2 * width**2))  # noqa: E731
    energy = env[..., None] * (bump(track1, 1.2) + 0.7 * bump(track2, 1.5))
    energy = energy + 0.5 * env[..., None] * bump(pitch[users, None].expand(n, frames), 0.7)
    energy = energy + 0.05 * torch.rand(n, frames, bands, generator=g)
    x = torch.log(0.02 + energy)
    x = (x - x.mean()) / x.std()
    info = _voices_info(frames, bands, n)
    return Dataset(info, x.float(), y, {"sex": sex[users]}, users)


def _voices_info(frames: int, bands: int, n: int) -> DatasetInfo:
    return DatasetInfo(
        name="voices",
        modality="sequence",
        task="spoken word: " + ", ".join(WORDS),
        num_classes=len(WORDS),
        input_shape=(frames, bands),
        size=n,
        embedded=True,
        games=("attribute", "property", "distribution", "user", "membership", "tracing"),
        source="leaklab procedural generator (leaklab.data.make_voices)",
        description=(
            "Speech-like utterances: frames of log band-energies of one of four words, spoken "
            "by ten speakers with personal voices (pitch, formant shift, rate, loudness). "
            "Sensitive attribute: the speaker's simulated sex (a pitch and formant shift); "
            "user ids are the speakers."
        ),
        attributes={"sex": ("female", "male")},
        has_users=True,
    )


@register_dataset(_voices_info(20, 16, 2000))
def _load_voices(info: DatasetInfo, *, n: int | None = None, seed: int = 0, **options) -> Dataset:
    return make_voices(info.size if n is None else n, seed=seed, **options)

