"""``POST /predict``: score an uploaded recording with the offline pipeline.

The upload is parsed as it streams in and refused (413) as soon as it passes
``server.max_upload_mb``, so an oversized body is never read to its end; parts are spooled to
a temporary file, not held in memory. Decoding and scoring (``model.preprocessing.load`` +
``model.predict.analyse``, the same code as ``pandapulse predict``) run in a worker thread, one
upload at a time, so the event loop keeps serving the live stream meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import BinaryIO

import soundfile as sf
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from model import preprocessing
from model.classifier import Classifier
from model.detect import DetectorParams
from model.errors import AudioError
from model.predict import analyse
from service.api.auth import require_token
from service.api.deps import RuntimeDep
from service.api.errors import ApiError
from service.api.runtime import MIB
from service.wire import PredictResult

log = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(require_token)])

MULTIPART_SLACK = 64 * 1024
"""Bytes allowed on top of the file limit for the multipart framing and headers."""
FIELD_NAME = "file"


class _TooLarge(Exception):
    pass


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit:
            raise _TooLarge
        yield chunk


def _score(
    file: BinaryIO,
    classifier: Classifier,
    detector: DetectorParams,
    max_s: float,
    band: tuple[float, float],
) -> PredictResult:
    """Check the duration from the header, decode, check again, then analyse (worker thread)."""
    try:
        info = sf.info(file)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"cannot decode the upload: {err}; use WAV, FLAC, OGG or MP3") from err
    file.seek(0)
    if info.samplerate > 0 and info.frames / info.samplerate > max_s:
        raise _TooLong(info.frames / info.samplerate)
    recording = preprocessing.load(file)
    if recording.duration_s > max_s:
        raise _TooLong(recording.duration_s)
    return PredictResult.model_validate(analyse(recording, classifier, detector, band=band))


class _TooLong(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


@router.post("/predict", tags=["predict"])
async def predict(request: Request, rt: RuntimeDep) -> PredictResult:
    """Score a recording (multipart field ``file``: WAV, FLAC, OGG or MP3).

    Answers per-segment ``p_success``/``p_failure``/``attention`` and the overall ``p_success``
    and ``verdict`` (``uncertain`` within ``encounter.uncertain_band``, which the answer
    repeats), exactly as ``pandapulse predict --json`` does (plus attention).
    """
    server = rt.settings.server
    limit = int(server.max_upload_mb * MIB)
    too_large = ApiError(
        413, "too_large", f"the upload exceeds {server.max_upload_mb:g} MiB (server.max_upload_mb)"
    )
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            415, "unsupported_media_type", "send the recording as multipart/form-data, field 'file'"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        rt.predict_errors += 1
        raise too_large
    parser = MultiPartParser(
        request.headers,
        _limited(request.stream(), limit + MULTIPART_SLACK),
        max_files=1,
        max_fields=8,
    )
    try:
        form = await parser.parse()
    except _TooLarge:
        rt.predict_errors += 1
        raise too_large from None
    except MultiPartException as err:
        rt.predict_errors += 1
        raise ApiError(
            400, "bad_multipart", f"cannot parse the multipart body: {err.message}"
        ) from err
    try:
        upload = form.get(FIELD_NAME)
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "missing_file", "the multipart body has no file field named 'file'")
        classifier = rt.classifier
        detector = rt.settings.detector
        async with rt.predict_slot:
            try:
                result = await run_in_threadpool(
                    _score,
                    upload.file,
                    classifier,
                    detector,
                    server.max_upload_s,
                    rt.settings.encounter.uncertain_band,
                )
            except _TooLong as err:
                raise ApiError(
                    413,
                    "too_long",
                    f"the recording lasts {err.seconds:.0f} s; at most {server.max_upload_s:g} s is"
                    " accepted (server.max_upload_s)",
                ) from None
    except (ApiError, AudioError):
        rt.predict_errors += 1
        raise
    finally:
        await form.close()
    rt.predicts += 1
    log.info(
        "predict %s: %.1f s, %d segments, verdict %s",
        upload.filename or "upload",
        result.duration_s,
        len(result.segments),
        result.verdict,
    )
    return result
