"""A voice's reports, read-only: the sweep's trials table and plots and the training runs' curves
that its registry lineage names (`voicefleet.serve.lineage`)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from voicefleet.serve.dependencies import Caller, Services, get_caller, get_services
from voicefleet.serve.errors import NotFound, openapi_errors
from voicefleet.serve.lineage import GROUPS, MEDIA_TYPES, StorageFiles, report_folders
from voicefleet.serve.schemas import VOICE_ID_PATTERN, ReportFile, ReportGroup, VoiceReports

router = APIRouter(prefix="/v1/voices", tags=["voices"])
ERRORS = openapi_errors(401, 403, 404, 422)
FILE = {200: {"content": {t.split(";")[0]: {} for t in MEDIA_TYPES.values()}, "description": "The file."}}
VoiceId = Path(..., pattern=VOICE_ID_PATTERN, description="Voice id.")


def _media_type(name: str) -> str:
    return MEDIA_TYPES[PurePosixPath(name).suffix]


def _reports(services: Services, voice_id: str) -> VoiceReports:
    record = services.registry.get(voice_id)  # VoiceNotFound -> 404
    files = StorageFiles(services.settings.storage)
    groups = []
    for group, name, folder in report_folders(record.lineage or {}):
        present = [f for f in GROUPS[group] if files.exists(folder, f)]
        if present:
            groups.append(ReportGroup(group=group, name=name, files=[
                ReportFile(name=f, url=f"v1/voices/{voice_id}/reports/{group}/{f}", media_type=_media_type(f))
                for f in present]))
    return VoiceReports(voice_id=voice_id, groups=groups)


def _read(services: Services, voice_id: str, group: str, name: str) -> bytes:
    record = services.registry.get(voice_id)
    if name in GROUPS[group]:
        for g, _, folder in report_folders(record.lineage or {}):
            if g == group:
                data = StorageFiles(services.settings.storage).read(folder, name)
                if data is not None:
                    return data
    raise NotFound(f"voice {voice_id!r} has no report file {group}/{name}")


@router.get("/{voice_id}/reports", response_model=VoiceReports, responses=ERRORS,
            summary="The sweep report and training curves a voice came from")
async def list_reports(voice_id: str = VoiceId, services: Services = Depends(get_services),
                       caller: Caller = Depends(get_caller)) -> VoiceReports:
    caller.require_voice(voice_id)  # before the registry, so a key cannot probe for voice names
    return await run_in_threadpool(_reports, services, voice_id)


@router.get("/{voice_id}/reports/{group}/{name}", response_class=Response, responses={**FILE, **ERRORS},
            summary="One report file of a voice (read-only; only the files the listing names)")
async def report_file(voice_id: str = VoiceId, group: Literal["sweep", "sovits_run", "gpt_run"] = Path(...),
                      name: str = Path(..., max_length=64, description="A file name from the listing."),
                      services: Services = Depends(get_services), caller: Caller = Depends(get_caller)) -> Response:
    caller.require_voice(voice_id)
    data = await run_in_threadpool(_read, services, voice_id, group, name)
    return Response(data, media_type=_media_type(name), headers={"Cache-Control": "no-store",
                                                                 "X-Content-Type-Options": "nosniff"})
