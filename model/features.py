"""Features: the only MFCC code in PandaPulse.

``mfcc`` is a batched torch re-implementation of ``librosa.feature.mfcc(y=x, sr=44100,
n_mfcc=40, n_fft=2048, hop_length=1024)`` (first 86 frames) that runs on CPU or GPU. The mel
filterbank and DCT matrix are taken from librosa/scipy so the two cannot drift apart; a test
pins the parity. ``combined`` is the paper's 62-dimension Table 2 feature, computed with librosa.
"""

from __future__ import annotations

import functools

import librosa
import numpy as np
import scipy.fft
import torch

from model import constants as C

_CPU_CHUNK_SEGMENTS = 4
"""On CPU ``mfcc`` works through a batch this many segments at a time: the STFT of a whole
batch of 32 (about 45 MB of complex spectra) falls out of cache and runs slower per segment
than small chunks do (bench/model_bench.py measures it). A speed knob, not a paper number."""


@functools.lru_cache(maxsize=8)
def _basis(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(window (n_fft,), mel filterbank (n_mels, 1 + n_fft/2), DCT-II ortho (n_mfcc, n_mels))."""
    window = torch.hann_window(C.N_FFT, periodic=True, dtype=torch.float32)
    mel = librosa.filters.mel(sr=C.SAMPLE_RATE, n_fft=C.N_FFT, n_mels=C.N_MELS)
    dct = scipy.fft.dct(np.eye(C.N_MELS), type=2, norm="ortho", axis=0)[: C.N_MFCC]
    return (
        window.to(device),
        torch.from_numpy(mel).float().to(device),
        torch.from_numpy(dct).float().to(device),
    )


def mfcc(audio: torch.Tensor) -> torch.Tensor:
    """MFCC of 2-s stereo segments.

    Parameters
    ----------
    audio : torch.Tensor, shape (..., 2, 88200), float32
        Peak-normalised segments (see ``model.preprocessing``), on any device.

    Returns
    -------
    torch.Tensor, shape (..., 2, 86, 40), float32, on ``audio``'s device
        Per channel, frames by coefficients. As in librosa called on one (2, 88200) segment,
        the 80-dB floor is relative to the loudest mel bin of the whole segment (both channels).
    """
    if audio.shape[-2:] != (C.N_CHANNELS, C.SEGMENT_SAMPLES):
        raise ValueError(
            f"mfcc expects (..., {C.N_CHANNELS}, {C.SEGMENT_SAMPLES}) audio, got {tuple(audio.shape)}"
        )
    if audio.dtype != torch.float32:
        raise TypeError(f"mfcc expects float32 audio, got {audio.dtype}")
    lead = audio.shape[:-2]
    flat = audio.reshape(-1, C.N_CHANNELS, C.SEGMENT_SAMPLES)
    step = len(flat) if audio.device.type != "cpu" else _CPU_CHUNK_SEGMENTS
    chunks = [_mfcc_segments(flat[i : i + step]) for i in range(0, len(flat), max(step, 1))]
    coeffs = torch.cat(chunks) if chunks else flat.new_zeros(0, C.N_CHANNELS, C.N_FRAMES, C.N_MFCC)
    return coeffs.reshape(*lead, C.N_CHANNELS, C.N_FRAMES, C.N_MFCC)


def _mfcc_segments(segments: torch.Tensor) -> torch.Tensor:
    """(S, 2, 88200) float32 -> (S, 2, 86, 40) float32: ``mfcc`` for a flat batch of segments."""
    window, mel_fb, dct = _basis(segments.device)
    spec = torch.stft(
        segments.reshape(-1, C.SEGMENT_SAMPLES),
        n_fft=C.N_FFT,
        hop_length=C.HOP_LENGTH,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = spec.abs().square_()  # (2S, 1025, 87); faster here than summing re² + im²
    mel = torch.matmul(mel_fb, power)  # (2S, 128, 87)
    db = 10.0 * torch.log10(torch.clamp(mel, min=C.AMIN))
    # As librosa: the floor is relative to the loudest bin of all 87 frames of both channels;
    # only then is the 87th frame dropped.
    db = db.reshape(-1, C.N_CHANNELS * C.N_MELS, C.REFERENCE_FRAMES)
    peak = db.amax(dim=(1, 2), keepdim=True)
    db = torch.maximum(db, peak - C.TOP_DB).reshape(-1, C.N_MELS, C.REFERENCE_FRAMES)
    coeffs = torch.matmul(dct, db[..., : C.N_FRAMES])  # (2S, 40, 86)
    return coeffs.transpose(-1, -2).reshape(-1, C.N_CHANNELS, C.N_FRAMES, C.N_MFCC)


def mfcc_numpy(segments: np.ndarray, *, device: str | torch.device = "cpu") -> np.ndarray:
    """``mfcc`` for a NumPy array (..., 2, 88200) float32; returns (..., 2, 86, 40) float32."""
    with torch.inference_mode():
        return (
            mfcc(torch.from_numpy(np.ascontiguousarray(segments, dtype=np.float32)).to(device))
            .cpu()
            .numpy()
        )


def combined(segment: np.ndarray) -> np.ndarray:
    """The paper's 62-dimension "combined" feature (Table 2), with librosa.

    Parameters
    ----------
    segment : np.ndarray, shape (2, 88200), float32
        One peak-normalised segment.

    Returns
    -------
    np.ndarray, shape (2, 86, 62), float32
        Per channel and frame: MFCC (40), chroma (12), spectral centroid (1), spectral
        contrast (7), roll-off (1), zero-crossing rate (1).
    """
    if segment.shape != (C.N_CHANNELS, C.SEGMENT_SAMPLES):
        raise ValueError(
            f"combined expects ({C.N_CHANNELS}, {C.SEGMENT_SAMPLES}), got {segment.shape}"
        )
    n_fft, hop, sr = C.N_FFT, C.HOP_LENGTH, C.SAMPLE_RATE
    y = np.ascontiguousarray(segment, dtype=np.float32)
    stft = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    rows = [
        mfcc_numpy(y).transpose(0, 2, 1),  # (2, 40, 86): the one MFCC implementation
        librosa.feature.chroma_stft(
            S=stft**2, sr=sr, n_chroma=C.N_CHROMA, n_fft=n_fft, hop_length=hop
        ),
        librosa.feature.spectral_centroid(S=stft, sr=sr, n_fft=n_fft, hop_length=hop),
        librosa.feature.spectral_contrast(
            S=stft, sr=sr, n_bands=C.N_CONTRAST_BANDS, n_fft=n_fft, hop_length=hop
        ),
        librosa.feature.spectral_rolloff(S=stft, sr=sr, n_fft=n_fft, hop_length=hop),
        librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop),
    ]
    stacked = np.concatenate([r[..., : C.N_FRAMES] for r in rows], axis=-2)
    return stacked.transpose(0, 2, 1).astype(np.float32)
