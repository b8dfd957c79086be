"""Models swapped and compared without a restart: upload, list, activate, roll back, shadow.

Reading the list needs the keepers' token; every change needs the admin token
(``server.admin_token``, ``service.api.auth.require_admin``). An upload is checked whole
(``service.models_store.check_upload``) before anything is stored; a refused one answers 4xx
and leaves the stored models as they were. Model changes run one at a time
(``Runtime.model_lock``); loading and warming a model happens off the event loop and off the
inference thread, and the swap itself is one reference the pipeline reads per batch.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam

from service.api.auth import require_admin, require_token
from service.api.deps import RuntimeDep
from service.api.errors import ApiError
from service.api.runtime import MIB, Runtime
from service.api.uploads import TooLarge, declared_too_large, read_form, uploaded_file
from service.models_store import (
    MAX_MODEL_MB,
    SUFFIX,
    VERSION_PATTERN,
    ModelRejected,
    check_upload,
    row_for,
    store_file,
    upload_file,
)
from service.records import ModelRow
from service.wire import ModelCard, ModelList

log = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(require_token)], tags=["models"])
admin = APIRouter(dependencies=[Depends(require_admin)], tags=["models"])


Version = Annotated[str, PathParam(pattern=VERSION_PATTERN, description="the model version")]


def _too_large() -> ApiError:
    return ApiError(413, "too_large", f"a model checkpoint may be at most {MAX_MODEL_MB} MiB")


def _rejected(err: ModelRejected) -> ApiError:
    return ApiError(422, "invalid_model", str(err))


async def _row(rt: Runtime, version: str) -> ModelRow:
    row = await rt.stored_model(version)
    if row is None:
        raise ApiError(404, "not_found", f"no stored model {version}: upload it first")
    return row


@router.get("/api/models")
async def list_models(rt: RuntimeDep) -> ModelList:
    """Every stored model with its model card, and which is active, shadow and previous."""
    return await rt.models()


@admin.post("/api/models", status_code=201)
async def upload_model(request: Request, rt: RuntimeDep) -> ModelCard:
    """Upload a checkpoint (multipart field ``file``, ``.safetensors``; admin token).

    It is checked (safetensors with PandaPulse metadata, this code's MFCC features, the live
    model's class names, weights matching their version, a test inference on a 2-s stereo
    segment) and stored under the data directory with its model card; it does not become
    active until ``activate``. 422 names the failed check; 409 when that version is stored.
    """
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the checkpoint as multipart/form-data, field 'file'",
        )
    limit = MAX_MODEL_MB * MIB
    if declared_too_large(request, limit):
        raise _too_large()
    try:
        form = await read_form(request, limit, max_fields=1000)
    except TooLarge:
        raise _too_large() from None
    try:
        upload = uploaded_file(form)
        filename = Path(upload.filename or "upload").name
        if not filename.endswith(SUFFIX):
            raise ApiError(
                422, "invalid_model", f"{filename} is not a {SUFFIX} checkpoint (the file name)"
            )
        async with rt.model_lock:
            row = await _store(rt, upload.file, filename)
    finally:
        await form.close()
    log.info("model %s stored (%s, %d bytes)", row.version, filename, row.size_bytes)
    return ModelCard.of(row, rt.role_of(row.version))


async def _store(rt: Runtime, source: BinaryIO, filename: str) -> ModelRow:
    """Copy the upload next to the stored models, check it, and rename it into place."""
    data_dir = rt.settings.storage.data_dir
    with upload_file(data_dir) as (handle, tmp):
        await asyncio.to_thread(shutil.copyfileobj, source, handle)
        handle.close()
        try:
            meta, _ = await asyncio.to_thread(
                check_upload, tmp, filename, rt.classifier.class_names, rt.settings.inference
            )
        except ModelRejected as err:
            raise _rejected(err) from err
        version = str(meta["model_version"])
        if await rt.stored_model(version) is not None:
            raise ApiError(409, "already_stored", f"model {version} is stored already")
        rel, size = await asyncio.to_thread(store_file, data_dir, tmp, version)
        row = row_for(meta, path=rel, origin="upload", filename=filename, size_bytes=size)
        try:
            await rt.monitor.store.arun(lambda s: s.add_model(row))
        except BaseException:
            (data_dir / rel).unlink(missing_ok=True)  # no row, no file
            raise
    return row


@admin.post("/api/models/{version}/activate")
async def activate(version: Version, rt: RuntimeDep) -> ModelList:
    """Make a stored model the live one (admin token). It is loaded and warmed first, then
    takes over at the next batch; audio keeps flowing. The model it replaces becomes
    ``previous`` (``rollback``). The choice survives a restart."""
    async with rt.model_lock:
        row = await _row(rt, version)
        try:
            await rt.activate(row)
        except ModelRejected as err:
            raise ApiError(409, "cannot_activate", str(err)) from err
    return await rt.models()


@admin.post("/api/models/rollback")
async def rollback(rt: RuntimeDep) -> ModelList:
    """Make the previous model live again (admin token); the current one becomes previous."""
    async with rt.model_lock:
        version = rt.previous_version
        if version is None:
            raise ApiError(409, "no_previous", "no model was replaced yet: nothing to roll back to")
        row = await rt.stored_model(version)
        if row is None:
            raise ApiError(409, "no_previous", f"the previous model {version} is not stored")
        try:
            await rt.activate(row)
        except ModelRejected as err:
            raise ApiError(409, "cannot_activate", str(err)) from err
    return await rt.models()


@admin.post("/api/models/{version}/shadow")
async def start_shadow(version: Version, rt: RuntimeDep) -> ModelList:
    """Score every live segment with this model too, beside the active one (admin token).
    Its scores never drive a verdict or an alert; ``/stats`` shows how well the two agree."""
    async with rt.model_lock:
        row = await _row(rt, version)
        if version == rt.model_version:
            raise ApiError(409, "already_active", f"model {version} is the active model")
        try:
            await rt.set_shadow(row)
        except ModelRejected as err:
            raise ApiError(409, "cannot_shadow", str(err)) from err
    return await rt.models()


@admin.delete("/api/models/{version}/shadow")
async def stop_shadow(version: Version, rt: RuntimeDep) -> ModelList:
    """Stop the shadow model (admin token)."""
    async with rt.model_lock:
        if rt.shadow_version != version:
            raise ApiError(404, "not_found", f"model {version} is not the shadow model")
        await rt.set_shadow(None)
    return await rt.models()
