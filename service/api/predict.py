"""``POST /predict``: score an uploaded recording with the offline pipeline.

The upload is parsed as it streams in and refused (413) as soon as it passes
``server.max_upload_mb``, so an oversized body is never read to its end; parts are spooled to
a temporary file, not held in memory. Scoring (``model.predict.analyse``, the same code as
``pandapulse predict``) decodes that file block by block and scores segments in batches as they
are cut, so memory stays bounded whatever the recording's length; it runs in a worker thread,
one upload at a time, so the event loop keeps serving the live stream meanwhile.
"""

from __future__ import annotations

import logging
from typing import BinaryIO

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from model.classifier import Classifier
from model.detect import DetectorParams
from model.errors import AudioError
from model.predict import analyse
from model.preprocessing import RecordingTooLong
from service.api.auth import require_token
from service.api.deps import RuntimeDep
from service.api.errors import ApiError
from service.api.runtime import MIB
from service.api.uploads import TooLarge, declared_too_large, read_form, uploaded_file
from service.wire import PredictResult

log = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(require_token)])


def _score(
    file: BinaryIO,
    classifier: Classifier,
    detector: DetectorParams,
    max_s: float,
    band: tuple[float, float],
) -> PredictResult:
    """Decode and analyse the upload block by block (worker thread). Its length is checked from
    the header before any audio is decoded, and again as the audio comes, so a header that
    under-states it stops the work as soon as ``max_s`` is passed."""
    try:
        result = analyse(file, classifier, detector, band=band, limit_s=max_s)
    except RecordingTooLong as err:
        raise _TooLong(err.seconds, at_least=err.at_least) from None
    return PredictResult.model_validate(result)


class _TooLong(Exception):
    def __init__(self, seconds: float, *, at_least: bool) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.at_least = at_least


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
    if declared_too_large(request, limit):
        rt.predict_errors += 1
        raise too_large
    try:
        form = await read_form(request, limit)
    except TooLarge:
        rt.predict_errors += 1
        raise too_large from None
    except ApiError:
        rt.predict_errors += 1
        raise
    try:
        upload = uploaded_file(form)
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
                    f"the recording lasts {'more than ' if err.at_least else ''}{err.seconds:.0f} s;"
                    f" at most {server.max_upload_s:g} s is"
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
