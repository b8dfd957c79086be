"""Malformed and hostile uploads for ``POST /predict``, generated here (nothing is stored).

Each ``Upload`` is the keyword arguments of one ``httpx`` request plus what a correct service
answers: ``"reject"`` (a 4xx with a JSON ``{"error", "detail"}``) or ``"accept"`` (200 with a
``/predict`` answer: the input is unusual but valid audio, such as 8 kHz or 192 kHz).

The WAV files are built byte by byte, so each one is exactly as broken as its name says.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import soundfile as sf

RATE = 44_100
PCM = 1
IEEE_FLOAT = 3
EXTENSIBLE = 0xFFFE
FOUR_GB = 0xFFFF_FFFF

Expect = Literal["reject", "accept"]


@dataclass(frozen=True)
class Upload:
    """One request to ``/predict``: ``name`` says what is wrong with it."""

    name: str
    expect: Expect
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    content: bytes | None = None
    data: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    min_segments: int = 1
    """For accepted uploads: the fewest scored segments a correct answer has."""
    statuses: tuple[int, ...] = ()
    """The acceptable 4xx codes when the kind of rejection is fixed (413 for size); any 4xx
    when empty."""

    def request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": dict(self.headers)}
        if self.files is not None:
            kwargs["files"] = self.files
        if self.content is not None:
            kwargs["content"] = self.content
        if self.data is not None:
            kwargs["data"] = self.data
        return kwargs


# --- WAV bytes, built by hand ----------------------------------------------------------------


def chunk(tag: bytes, body: bytes, *, size: int | None = None) -> bytes:
    """A RIFF chunk; ``size`` overrides the length field (to lie about it)."""
    length = len(body) if size is None else size
    pad = b"\0" if len(body) % 2 else b""
    return tag + struct.pack("<I", length) + body + pad


def fmt_body(
    *,
    fmt: int = PCM,
    channels: int = 2,
    rate: int = RATE,
    bits: int = 16,
    block_align: int | None = None,
) -> bytes:
    align = (channels * bits // 8) if block_align is None else block_align
    byte_rate = (rate * align) & 0xFFFF_FFFF
    return struct.pack(
        "<HHIIHH", fmt, channels & 0xFFFF, rate & 0xFFFF_FFFF, byte_rate, align, bits
    )


def riff(
    *chunks: bytes, form: bytes = b"WAVE", size: int | None = None, magic: bytes = b"RIFF"
) -> bytes:
    body = form + b"".join(chunks)
    return magic + struct.pack("<I", len(body) if size is None else size) + body


def wav(
    samples: np.ndarray,
    *,
    rate: int = RATE,
    fmt: int = PCM,
    data_size: int | None = None,
    riff_size: int | None = None,
) -> bytes:
    """A WAV file of ``samples`` (frames, channels): int16 -> PCM 16, float32 -> IEEE float."""
    samples = np.atleast_2d(samples.T).T if samples.ndim == 1 else samples
    channels = samples.shape[1]
    bits = samples.dtype.itemsize * 8
    return riff(
        chunk(b"fmt ", fmt_body(fmt=fmt, channels=channels, rate=rate, bits=bits)),
        chunk(b"data", samples.astype(samples.dtype.newbyteorder("<")).tobytes(), size=data_size),
        size=riff_size,
    )


def tone(
    seconds: float, *, rate: int = RATE, channels: int = 2, dtype: str = "int16"
) -> np.ndarray:
    """(frames, channels) of a 440 Hz tone at half scale."""
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    block = np.repeat(wave[:, None], channels, axis=1)
    if dtype == "int16":
        return (block * 32767).astype(np.int16)
    return block.astype(dtype)


def call(seconds: float, *, rate: int = RATE) -> np.ndarray:
    """(frames, 2) int16: faint noise with a loud harmonic burst (a call) in its middle third."""
    rng = np.random.default_rng(5)
    n = round(seconds * rate)
    audio = 0.001 * rng.standard_normal((n, 2))
    t = np.arange(n // 3) / rate
    burst = sum(0.3 / k * np.sin(2 * np.pi * 350.0 * k * t) for k in (1, 2, 3))
    audio[n // 3 : n // 3 + len(t)] += burst[:, None] * np.hanning(len(t))[:, None] ** 0.2
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16)


def encoded(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def long_silence_flac(seconds: float, rate: int = 8_000) -> bytes:
    """Mono FLAC of digital silence: tiny on the wire, ``seconds`` long once decoded."""
    buf = io.BytesIO()
    block = np.zeros(rate * 60, dtype=np.int16)
    with sf.SoundFile(
        buf, "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16"
    ) as out:
        remaining = int(seconds * rate)
        while remaining > 0:
            n = min(remaining, len(block))
            out.write(block[:n])
            remaining -= n
    return buf.getvalue()


def png_bytes() -> bytes:
    """A real 1x1 PNG image."""

    def png_chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0\0"))
        + png_chunk(b"IEND", b"")
    )


def zip_bytes() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("call.wav", b"not really")
    return buf.getvalue()


# --- the cases -------------------------------------------------------------------------------


def one_file(
    name: str, body: bytes, *, filename: str = "upload.wav", ctype: str = "audio/wav"
) -> list:
    return [("file", (filename, body, ctype))]


def uploads(*, max_upload_bytes: int, max_duration_s: float) -> Iterator[Upload]:
    """Every hostile upload, given the service's upload size and duration limits."""
    rng = np.random.default_rng(20240611)
    good = wav(tone(1.0))
    fmt16 = chunk(b"fmt ", fmt_body())
    data1s = chunk(b"data", tone(1.0).tobytes())

    def reject(name: str, body: bytes, **kw: Any) -> Upload:
        statuses = kw.pop("statuses", ())
        return Upload(name, "reject", files=one_file(name, body, **kw), statuses=statuses)

    # Not audio at all.
    yield reject("empty file", b"")
    yield reject("one byte", b"R")
    yield reject("just the RIFF magic", b"RIFF")
    yield reject("text named .wav", b"hello, this is a shopping list, not audio\n" * 50)
    yield reject(
        "html named .wav", b"<!doctype html><html><body><script>alert(1)</script></body></html>"
    )
    yield reject("json named .wav", json.dumps({"file": "call.wav", "samples": [0, 1, 2]}).encode())
    yield reject("random bytes named .wav", rng.bytes(64_000))
    yield reject("a megabyte of zero bytes", bytes(1 << 20))
    yield reject("png image named .wav", png_bytes(), ctype="image/png")
    yield reject("zip archive named .wav", zip_bytes(), ctype="application/zip")
    yield reject(
        "mp3 of garbage",
        b"ID3\x04\0\0\0\0\0\0" + rng.bytes(40_000),
        filename="call.mp3",
        ctype="audio/mpeg",
    )
    yield reject(
        "mp3 frame sync then garbage",
        b"\xff\xfb\x90\x64" + rng.bytes(40_000),
        filename="call.mp3",
        ctype="audio/mpeg",
    )
    yield reject(
        "ogg magic then garbage",
        b"OggS\0\x02" + rng.bytes(20_000),
        filename="call.ogg",
        ctype="audio/ogg",
    )
    yield reject(
        "flac magic then garbage",
        b"fLaC" + rng.bytes(20_000),
        filename="call.flac",
        ctype="audio/flac",
    )

    # Broken WAV structure.
    yield reject("truncated WAV (first 20 bytes)", good[:20])
    yield reject("truncated WAV (header, no data chunk header)", good[:36])
    yield reject("wrong RIFF magic", b"JUNK" + good[4:])
    yield reject("WAVE form replaced by AVI", good[:8] + b"AVI " + good[12:])
    yield reject("fmt chunk missing", riff(data1s))
    yield reject("data chunk missing", riff(fmt16))
    yield reject("fmt chunk of size 0", riff(chunk(b"fmt ", b""), data1s))
    yield reject("unknown format tag 0x1234", riff(chunk(b"fmt ", fmt_body(fmt=0x1234)), data1s))
    yield reject("0 bits per sample", riff(chunk(b"fmt ", fmt_body(bits=0)), data1s))
    yield reject("0 channels", riff(chunk(b"fmt ", fmt_body(channels=0)), data1s))
    yield reject("sample rate 0", riff(chunk(b"fmt ", fmt_body(rate=0)), data1s))
    yield reject("zero-length data chunk", riff(fmt16, chunk(b"data", b"")))
    yield reject("half a sample of data", riff(fmt16, chunk(b"data", b"\x01")))
    yield reject(
        "header claims 4 GB of data, holds 2 bytes",
        riff(fmt16, b"data" + struct.pack("<I", FOUR_GB) + b"\0\0", size=FOUR_GB),
    )
    yield reject(
        "huge channel count header (65535)",
        riff(
            chunk(b"fmt ", fmt_body(channels=65535, bits=16, block_align=65535 * 2 & 0xFFFF)),
            data1s,
        ),
    )

    # Decodable, but not audio the model may take.
    yield reject(
        "NaN samples (float WAV)", wav(np.full((RATE, 2), np.nan, np.float32), fmt=IEEE_FLOAT)
    )
    yield reject(
        "+Inf samples (float WAV)", wav(np.full((RATE, 2), np.inf, np.float32), fmt=IEEE_FLOAT)
    )
    yield reject(
        "-Inf samples (float WAV)", wav(np.full((RATE, 2), -np.inf, np.float32), fmt=IEEE_FLOAT)
    )
    one_nan = tone(1.0, dtype="float32")
    one_nan[RATE // 2, 1] = np.nan
    yield reject("a single NaN in a tone (float WAV)", wav(one_nan, fmt=IEEE_FLOAT))
    nan64 = np.full((RATE, 1), np.nan, np.float64)
    yield reject("NaN samples (64-bit float WAV, mono)", wav(nan64, fmt=IEEE_FLOAT))
    yield reject("8 channels", wav(tone(1.0, channels=8)))
    yield reject("3 channels", wav(tone(1.0, channels=3)))
    yield reject("7 kHz sample rate", wav(tone(1.0, rate=7_000), rate=7_000))
    yield reject("500 kHz sample rate", wav(tone(0.1, rate=500_000), rate=500_000))
    yield reject("1 Hz sample rate", wav(tone(1.0)[:64], rate=1))
    yield reject("sample rate 2^31 - 1", wav(tone(1.0)[:64], rate=2**31 - 1))
    yield reject(
        "FLAC, 8 channels",
        encoded(tone(0.5, channels=8), RATE, "FLAC"),
        filename="c.flac",
        ctype="audio/flac",
    )

    # Limits.
    over = max_upload_bytes + 256 * 1024  # past the multipart framing allowance too
    frames = over // 4 + 1
    big = riff(fmt16, chunk(b"data", bytes(frames * 4)))
    yield reject("over the size limit", big, statuses=(413,))
    yield reject(
        f"longer than {max_duration_s:.0f} s (small FLAC of silence)",
        long_silence_flac(max_duration_s + 120),
        filename="long.flac",
        ctype="audio/flac",
    )

    # Not the request the route expects.
    yield reject(
        "path-traversal file name, garbage content",
        b"not audio at all",
        filename="../../../etc/passwd",
    )
    yield reject("absolute file name with NUL byte", b"garbage", filename="/tmp/x\x00.wav")
    yield reject("10 kB file name, garbage content", b"garbage", filename="a" * 10_000 + ".wav")
    yield Upload(
        "missing file field (wrong field name)",
        "reject",
        files=[("audio", ("call.wav", good, "audio/wav"))],
    )
    yield Upload("no body at all", "reject")
    yield Upload("form field instead of a file", "reject", data={"file": "call.wav"})
    yield Upload(
        "two files",
        "reject",
        files=[("file", ("a.wav", good, "audio/wav")), ("file", ("b.wav", good, "audio/wav"))],
    )
    yield Upload(
        "raw WAV body, not multipart", "reject", content=good, headers={"content-type": "audio/wav"}
    )
    yield Upload(
        "JSON body, wrong content type",
        "reject",
        content=json.dumps({"file": "call.wav"}).encode(),
        headers={"content-type": "application/json"},
    )
    yield Upload(
        "multipart content type with a broken body",
        "reject",
        content=b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    yield Upload(
        "multipart content type without a boundary",
        "reject",
        content=good,
        headers={"content-type": "multipart/form-data"},
    )

    # Valid, if unusual: a correct service answers them (200, not 4xx).
    yield Upload(
        "8 kHz (a valid rate)", "accept", files=one_file("", wav(call(3.0, rate=8_000), rate=8_000))
    )
    yield Upload(
        "192 kHz (a valid rate)",
        "accept",
        files=one_file("", wav(call(3.0, rate=192_000), rate=192_000)),
    )
    yield Upload(
        "valid WAV, path-traversal file name",
        "accept",
        files=one_file("", wav(call(3.0)), filename="../../../../tmp/pandapulse-traversal.wav"),
    )
    # One sample is a well-formed recording too short to hold a call: the truthful answer is
    # 200 with no segments and no verdict.
    yield Upload("one sample", "accept", files=one_file("", wav(tone(1.0)[:1])), min_segments=0)


def count(expect: Expect, **limits: Any) -> int:
    return sum(1 for u in uploads(**limits) if u.expect == expect)


if __name__ == "__main__":  # a quick look at the list: python -m tests.reliability.hostile
    for u in uploads(max_upload_bytes=int(os.environ.get("MAX", 50 << 20)), max_duration_s=600):
        print(f"{u.expect:7} {u.name}")
