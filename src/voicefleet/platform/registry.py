"""The voice registry: a catalogue of servable voices under a storage path (local or URI).

Layout (`root` is a folder or any URI pyarrow's filesystems accept, e.g. s3://bucket/voicefleet)::

    <root>/voices/<voice_id>/gpt.ckpt        GPT weights (official .ckpt export)
    <root>/voices/<voice_id>/sovits.pth      SoVITS weights (official .pth export)
    <root>/voices/<voice_id>/reference.wav   reference clip (3-10 s)
    <root>/voices/<voice_id>/voice.json      the record: prompt text, language, metrics, lineage
    <root>/voices/<voice_id>/onnx/           its ONNX export, if made (`voicefleet.platform.onnx_exports`)

An adapter voice stores a LoRA adapter (`voicefleet.models.adapters`) in place of a stage's
weights: `gpt.lora.safetensors` / `sovits.lora.safetensors`, a few MB, and its record's
`adapters` names, per stage, the rank, alpha, targets and the fingerprint of the pretrained
stage the adapter was trained on (the only base it may be applied to).

`voice.json` is written last: a voice exists once its record exists, so readers never see a
half-registered voice, on object stores too. Records are immutable; registering an existing id
needs `overwrite=True` and writes a new version, whose files get their own names
(`gpt.v2.ckpt`, ...): the previous version stays whole and servable until the new record replaces
it, and its files are removed only then. A registration that fails (the storage full, the writer
killed) leaves the voice as it was: the files it wrote are removed when it can, and any left by a
killed writer are ignored by readers and removed by the next registration.

A record or file that cannot be read (damaged on disk) raises `VoiceDamaged` for that voice only;
`list` leaves such a voice out, so every other voice stays listed and servable.

Folders derived from a voice (its ONNX export) live beside its files and are no part of its
record: registering the voice again keeps them (their own manifest tells a stale one), deleting
the voice removes them.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pyarrow.fs as pafs

from voicefleet.models.adapter_config import ADAPTER_SUFFIX, read_adapter_metadata
from voicefleet.models.checkpoint.files import atomic_folder

logger = logging.getLogger(__name__)

VOICE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
FILES = {"gpt": "gpt.ckpt", "sovits": "sovits.pth", "reference": "reference.wav"}
RECORD = "voice.json"


class RegistryError(ValueError):
    """A registry operation that cannot be done as asked (bad id, missing voice, ...).

    `str()` may name the registry's location (for operators and CLI users); `client_message` is
    what an HTTP client may see: it leaves out the registry's location (a filesystem path or a
    bucket URI), which tells a client nothing it can act on and exposes the deployment.
    """

    @property
    def client_message(self) -> str:
        return " ".join(str(self).split())


class _VoiceAtLocation(RegistryError):
    """A registry error about one voice; the registry's location appears in `str()` only."""

    def __init__(self, voice_id: str, location: str | None = None):
        self.voice_id, self.location = voice_id, location
        super().__init__(self._describe(location) if location else self.client_message)

    def _describe(self, location: str) -> str:
        raise NotImplementedError

    def __str__(self) -> str:  # KeyError (a base of VoiceNotFound) would quote the message
        return self.args[0]

    def __reduce__(self):
        # `args` holds the formatted message, not the constructor's arguments; Ray pickles
        # exceptions across processes, so rebuild from (voice_id, location).
        return type(self), (self.voice_id, self.location), self.__dict__


class VoiceNotFound(_VoiceAtLocation, KeyError):
    """The registry has no voice of that id."""

    def _describe(self, location: str) -> str:
        return f"voice {self.voice_id!r} is not in the registry at {location}"

    @property
    def client_message(self) -> str:
        return f"voice {self.voice_id!r} not found"


class VoiceExists(_VoiceAtLocation):
    """A voice of that id is already registered and overwriting was not asked for."""

    def _describe(self, location: str) -> str:
        return f"voice {self.voice_id!r} already exists in {location}; pass overwrite to replace it"

    @property
    def client_message(self) -> str:
        return f"voice {self.voice_id!r} already exists"


class VoiceDamaged(_VoiceAtLocation):
    """A voice whose record or files cannot be read or loaded (damaged or removed on disk)."""

    def _describe(self, location: str) -> str:
        return (f"voice {self.voice_id!r} in {location} is damaged: its files cannot be read; register it "
                "again or delete it")

    @property
    def client_message(self) -> str:
        return f"voice {self.voice_id!r} is damaged on the server and cannot be used; delete it and register it again"


class StorageFull(RegistryError):
    """The registry's storage has no room left (ENOSPC, or a quota): nothing was registered."""

    def __init__(self, voice_id: str):
        self.voice_id = voice_id
        super().__init__(f"no space left in the voice registry's storage: voice {voice_id!r} was not registered "
                         "(free some space, then try again)")

    def __reduce__(self):
        return type(self), (self.voice_id,), self.__dict__


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_storage_full(error: BaseException) -> bool:
    """Whether an OSError (also pyarrow's, which carries only the message) says the disk is full."""
    return isinstance(error, OSError) and (error.errno in NO_SPACE or "No space left on device" in str(error)
                                           or "Disk quota exceeded" in str(error))


def file_names(version: int) -> dict[str, str]:
    """The registry's file names of one version of a voice: version 1 keeps the plain names."""
    if version <= 1:
        return dict(FILES)
    return {kind: f"{Path(name).stem}.v{version}{Path(name).suffix}" for kind, name in FILES.items()}


def check_voice_id(voice_id: str) -> str:
    if not isinstance(voice_id, str) or not VOICE_ID.match(voice_id):
        raise RegistryError(f"invalid voice id {voice_id!r}: use 1-64 characters of a-z, 0-9, '_' and '-', "
                            f"starting with a letter or digit")
    return voice_id


@dataclass
class VoiceRecord:
    voice_id: str
    prompt_text: str
    prompt_lang: str
    language: str
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)  # e.g. run name, sweep id, pretrained hashes
    evaluation: dict[str, Any] = field(default_factory=dict)  # the latest `voicefleet eval` summary of this version
    created_at: str = ""
    version: int = 1
    files: dict[str, str] = field(default_factory=lambda: dict(FILES))
    # the SoVITS model version (v2, v2Pro, v2ProPlus) read from the file at registration; None when
    # the file could not be read as a SoVITS generator then; records from before it existed are v2
    model_version: str | None = "v2"
    # per adapted stage ("gpt", "sovits"): rank, alpha, targets, base_fingerprint; empty for a full voice
    adapters: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_adapter(self) -> bool:
        return bool(self.adapters)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, sort_keys=True)


def _model_version(sovits: Path) -> str | None:
    from voicefleet.models.checkpoint.errors import CheckpointError
    from voicefleet.models.checkpoint.sovits_io import sovits_file_version

    try:
        return sovits_file_version(sovits)
    except CheckpointError as e:
        logger.warning("cannot tell the model version of %s (%s); the voice is registered without it", sovits, e)
        return None


class VoiceRegistry:
    """Register, look up, list and delete voices under `root`."""

    def __init__(self, root: str | Path):
        root = str(root)
        if "://" in root:
            self.fs, self.root = pafs.FileSystem.from_uri(root)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(root).resolve())
        self.uri = root

    def _dir(self, voice_id: str) -> str:
        return f"{self.root}/voices/{check_voice_id(voice_id)}"

    def _read_json(self, path: str) -> dict:
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read().decode("utf-8"))

    def exists(self, voice_id: str) -> bool:
        return self.fs.get_file_info(f"{self._dir(voice_id)}/{RECORD}").type == pafs.FileType.File

    def get(self, voice_id: str) -> VoiceRecord:
        """The voice's record; `VoiceDamaged` when it exists but cannot be read."""
        path = f"{self._dir(voice_id)}/{RECORD}"
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            raise VoiceNotFound(voice_id, self.uri)
        try:
            return VoiceRecord(**self._read_json(path))
        except (OSError, ValueError, TypeError) as e:  # unreadable, not JSON, or not a record
            logger.error("voice %s: its record %s cannot be read: %s", voice_id, path, e)
            raise VoiceDamaged(voice_id, self.uri) from None

    def list(self) -> list[VoiceRecord]:
        base = f"{self.root}/voices"
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return []
        records = []
        for info in self.fs.get_file_info(pafs.FileSelector(base)):
            if info.type == pafs.FileType.Directory and VOICE_ID.match(info.base_name) and self.exists(info.base_name):
                try:
                    records.append(self.get(info.base_name))
                except VoiceDamaged:  # logged by get; the other voices are still listed
                    continue
        return sorted(records, key=lambda r: r.voice_id)

    def register(self, voice_id: str, *, gpt: str | Path, sovits: str | Path, reference: str | Path,
                 prompt_text: str, prompt_lang: str, language: str | None = None,
                 metrics: Mapping[str, Any] | None = None, lineage: Mapping[str, Any] | None = None,
                 overwrite: bool = False) -> VoiceRecord:
        """Copy a voice's files into the registry and write its record (last). `gpt` and `sovits` are
        each a stage's full weights or a LoRA adapter file (recognised by its header)."""
        check_voice_id(voice_id)
        version = 1
        if self.exists(voice_id):
            if not overwrite:
                raise VoiceExists(voice_id, self.uri)
            version = self.get(voice_id).version + 1
        sources = {"gpt": Path(gpt), "sovits": Path(sovits), "reference": Path(reference)}
        for kind, src in sources.items():
            if not src.is_file():
                raise RegistryError(f"cannot register voice {voice_id!r}: {kind} file {src} does not exist")
        names, adapters = file_names(version), {}
        for kind in ("gpt", "sovits"):
            meta = read_adapter_metadata(sources[kind])
            if meta is None:
                continue
            if meta.get("stage") != kind:
                raise RegistryError(f"cannot register voice {voice_id!r}: {sources[kind]} is a {meta.get('stage')} "
                                    f"adapter, given as the {kind} weights")
            names[kind] = f"{kind}{'' if version <= 1 else f'.v{version}'}{ADAPTER_SUFFIX}"
            adapters[kind] = {"rank": int(meta["rank"]), "alpha": float(meta["alpha"]),
                              "targets": json.loads(meta["targets"]), "base_fingerprint": meta["base_fingerprint"]}
        folder = self._dir(voice_id)
        new_folder = version == 1
        record = VoiceRecord(voice_id=voice_id, prompt_text=prompt_text, prompt_lang=prompt_lang,
                             language=language or prompt_lang, metrics=dict(metrics or {}),
                             lineage=dict(lineage or {}), version=version, files=names, adapters=adapters,
                             created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                             # an adapter's version is its base's, which the serving replica holds
                             model_version=None if "sovits" in adapters else _model_version(sources["sovits"]))
        try:
            self.fs.create_dir(folder, recursive=True)
            # the new version's files under their own names: the current version stays servable
            for kind, src in sources.items():
                pafs.copy_files(str(src), f"{folder}/{names[kind]}", source_filesystem=pafs.LocalFileSystem(),
                                destination_filesystem=self.fs)
            self._write_record(record)  # the new version exists from here on
        except BaseException as e:
            self._discard(folder, [*names.values(), f".{RECORD}.tmp"], whole=new_folder)
            if is_storage_full(e):
                logger.error("registering voice %s in %s failed: %s", voice_id, self.uri, e)
                raise StorageFull(voice_id) from None
            raise
        self._remove_unlisted(folder, record)  # earlier versions' files, a full voice's turned adapter included
        logger.info("registered voice %s (version %d) in %s", voice_id, version, self.uri)
        return record

    def _discard(self, folder: str, names: list[str], *, whole: bool) -> None:
        """Remove what a failed registration wrote (best effort: the disk may still be full)."""
        try:
            if whole and not self.exists(folder.rsplit("/", 1)[1]):
                self.fs.delete_dir(folder)
                return
            for name in names:
                if self.fs.get_file_info(f"{folder}/{name}").type == pafs.FileType.File:
                    self.fs.delete_file(f"{folder}/{name}")
        except OSError as e:
            logger.warning("could not remove the partial files of a failed registration in %s: %s", folder, e)

    def _remove_unlisted(self, folder: str, record: VoiceRecord) -> None:
        """Delete the files of earlier versions (and of killed registrations) the record does not name."""
        keep = {*record.files.values(), RECORD}
        for info in self.fs.get_file_info(pafs.FileSelector(folder)):
            if info.type == pafs.FileType.File and info.base_name not in keep:
                try:
                    self.fs.delete_file(info.path)
                except OSError as e:  # a leftover costs space, nothing else
                    logger.warning("could not remove %s: %s", info.path, e)

    def _write_record(self, record: VoiceRecord) -> None:
        # `self.fs` may be an object store, where `atomic_file` (local paths) does not apply
        folder = self._dir(record.voice_id)
        tmp = f"{folder}/.{RECORD}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(record.to_json().encode("utf-8"))
        self.fs.move(tmp, f"{folder}/{RECORD}")

    def record_evaluation(self, voice_id: str, evaluation: Mapping[str, Any], *, version: int) -> VoiceRecord:
        """Keep `evaluation` (an evaluation summary and where it came from) as the voice's latest.

        `version` is the registry version that was evaluated: when the voice has been replaced
        since, the result describes files that are gone and is refused.
        """
        record = self.get(voice_id)
        if record.version != version:
            raise RegistryError(f"voice {voice_id!r} is at version {record.version} now, not the evaluated "
                                f"version {version}; evaluate it again")
        record.evaluation = dict(evaluation)
        self._write_record(record)
        logger.info("recorded an evaluation of voice %s (version %d)", voice_id, version)
        return record

    def delete(self, voice_id: str) -> None:
        if not self.exists(voice_id):
            raise VoiceNotFound(voice_id, self.uri)
        folder = self._dir(voice_id)
        self.fs.delete_file(f"{folder}/{RECORD}")  # gone for readers first
        self.fs.delete_dir(folder)
        logger.info("deleted voice %s from %s", voice_id, self.uri)

    def local_dir(self, voice_id: str) -> Path | None:
        """The voice's folder on this machine, or None for a registry on object storage."""
        return Path(self._dir(voice_id)) if isinstance(self.fs, pafs.LocalFileSystem) else None

    def has_folder(self, voice_id: str, name: str) -> bool:
        return self.fs.get_file_info(f"{self._dir(voice_id)}/{name}").type == pafs.FileType.Directory

    def store_folder(self, voice_id: str, name: str, source: str | Path) -> None:
        """Copy local folder `source` into the voice's folder as `name`, replacing one there (for a
        registry on object storage; a local one is written in place by its writer)."""
        self.get(voice_id)  # VoiceNotFound / VoiceDamaged
        target = f"{self._dir(voice_id)}/{name}"
        if self.has_folder(voice_id, name):
            self.fs.delete_dir(target)
        self.fs.create_dir(target, recursive=True)  # object stores' file systems want the folder first
        pafs.copy_files(str(source), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)

    def local_folder(self, voice_id: str, name: str, cache_dir: str | Path | None = None) -> Path | None:
        """Local path of the voice's folder `name` (copied into `cache_dir` from a remote registry
        first), or None when the voice has none."""
        local = self.local_dir(voice_id)
        if local is not None:
            return local / name if (local / name).is_dir() else None
        if not self.has_folder(voice_id, name):
            return None
        source = f"{self._dir(voice_id)}/{name}"
        target = Path(cache_dir or tempfile.mkdtemp(prefix="voicefleet-voice-")) / voice_id / name
        target.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(source, str(target), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
        return target

    def local_files(self, voice_id: str, cache_dir: str | Path | None = None) -> dict[str, Path]:
        """Local paths of a voice's files; remote registries are copied into `cache_dir` first."""
        record = self.get(voice_id)
        folder = self._dir(voice_id)
        if isinstance(self.fs, pafs.LocalFileSystem):
            return {kind: Path(folder) / name for kind, name in record.files.items()}
        target = Path(cache_dir or tempfile.mkdtemp(prefix="voicefleet-voice-")) / voice_id / str(record.version)
        if not (target / RECORD).is_file():
            try:
                with atomic_folder(target) as staging:  # never replaces a folder it did not write
                    for name in list(record.files.values()) + [RECORD]:
                        pafs.copy_files(f"{folder}/{name}", str(staging / name), source_filesystem=self.fs,
                                        destination_filesystem=pafs.LocalFileSystem())
            except FileExistsError:
                if not (target / RECORD).is_file():
                    raise
                # another process cached the same version meanwhile; its copy is as good as ours
        return {kind: target / name for kind, name in record.files.items()}
