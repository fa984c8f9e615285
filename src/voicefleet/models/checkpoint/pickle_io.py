"""Reading and writing official GPT-SoVITS weight files without running code from them.

Official files are `torch.save` zip archives (pickles). An exported SoVITS file's `config` is a
pickled `utils.HParams` object (GPT-SoVITS's `GPT_SoVITS/utils.py`), so

* loading uses torch's `weights_only` unpickler, which only builds tensors, containers and
  allow-listed classes; the one global `utils.HParams` is mapped to our `HParams` class, so a
  user-given file can never run code and GPT-SoVITS need not be installed;
* saving writes that same global name for our `HParams`, so GPT-SoVITS's own tools (which
  read `hps.data.filter_length` by attribute) load our exports unchanged.

v2Pro/v2ProPlus exports carry a version tag (`05`/`06`) in place of the zip's first two bytes
`PK`; such files are read with `PK` put back in memory and written with the tag (`head=`), as
the official writer does (`checkpoint.versions`).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from voicefleet.models.checkpoint.files import atomic_file
from voicefleet.models.checkpoint.errors import CheckpointError
from voicefleet.models.checkpoint.versions import HEAD_VERSIONS, READABLE_HEADS, ZIP_HEAD

OFFICIAL_HPARAMS_GLOBAL = "utils.HParams"



class HParams:
    """Attribute-and-item access config node, pickle-compatible with GPT-SoVITS `utils.HParams`.

    Entries live in `__dict__` exactly as in the official class, so the pickled state is the same.
    """

    def __init__(self, **kwargs: Any):
        for k, v in kwargs.items():
            self[k] = HParams(**v) if isinstance(v, dict) else v

    def keys(self):
        return self.__dict__.keys()

    def items(self):
        return self.__dict__.items()

    def values(self):
        return self.__dict__.values()

    def __len__(self) -> int:
        return len(self.__dict__)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dict__)

    def __getitem__(self, key: str) -> Any:
        try:
            return self.__dict__[key]
        except KeyError:
            raise KeyError(key) from None

    def __setitem__(self, key: str, value: Any) -> None:
        self.__dict__[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self.__dict__

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HParams) and to_plain(self) == to_plain(other)

    def __repr__(self) -> str:
        return f"HParams({self.__dict__!r})"


def to_plain(obj: Any) -> Any:
    """Nested HParams / mappings -> nested plain dicts (other values unchanged)."""
    if isinstance(obj, (HParams, Mapping)):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def _sniff(path: Path) -> bytes:
    """The file's first two bytes, once it is known to be a zip archive voicefleet can read."""
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if not path.is_file():
        raise CheckpointError(path, "is not a file")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] in HEADER_REFUSED:
        raise CheckpointError(path, f"is a GPT-SoVITS {HEAD_VERSIONS[head[:2]]} file (header {head[:2]!r}); "
                                    "voicefleet reads v2, v2Pro and v2ProPlus files")
    if head[:2] not in (ZIP_HEAD, *READABLE_HEADS) or not zipfile.is_zipfile(path):
        raise CheckpointError(path, "is not a torch checkpoint (expected a torch.save zip archive)")
    return head[:2]


HEADER_REFUSED = {h for h in HEAD_VERSIONS if h not in READABLE_HEADS}


def load_official_file(path: str | Path) -> Any:
    """Load an official (or voicefleet-written) `.pth`/`.ckpt` safely onto the CPU.

    Raises `CheckpointError` naming the file for a missing, non-torch, corrupt file, or one that
    needs classes other than tensors, containers and `utils.HParams`.
    """
    path = Path(path)
    head = _sniff(path)
    try:
        source: Any = path
        if head != ZIP_HEAD:  # a version-tagged export: the zip header goes back in memory only
            source = io.BytesIO(ZIP_HEAD + path.read_bytes()[2:])
        with torch.serialization.safe_globals([(HParams, OFFICIAL_HPARAMS_GLOBAL)]):
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        detail = next((line for line in first if "Unsupported global" in line), first[0] if first else "")
        raise CheckpointError(path, f"refused to load: it needs code that is not allowed in a weight file ({detail.strip()})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError) as e:
        raise CheckpointError(path, f"is corrupt or truncated ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


class _OfficialPickler(pickle._Pickler):  # the pure-Python pickler lets us write one global by name
    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is HParams:
            module, qualname = OFFICIAL_HPARAMS_GLOBAL.split(".")
            if self.proto >= 4:
                self.save(module)
                self.save(qualname)
                self.write(pickle.STACK_GLOBAL)
            else:
                self.write(pickle.GLOBAL + module.encode() + b"\n" + qualname.encode() + b"\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


class _OfficialPickleModule:
    """A `pickle_module` for `torch.save` that writes our HParams as `utils.HParams`."""

    Pickler = _OfficialPickler
    Unpickler = pickle.Unpickler
    __name__ = "pickle"

    @staticmethod
    def dump(obj: Any, file: Any, protocol: int | None = None) -> None:
        _OfficialPickler(file, protocol=protocol).dump(obj)

    @staticmethod
    def dumps(obj: Any, protocol: int | None = None) -> bytes:
        buf = io.BytesIO()
        _OfficialPickler(buf, protocol=protocol).dump(obj)
        return buf.getvalue()

    load = staticmethod(pickle.load)
    loads = staticmethod(pickle.loads)


def save_official_file(obj: Any, path: str | Path, *, overwrite: bool = False, head: bytes | None = None) -> Path:
    """`torch.save` in the official layout (pickle protocol 2, zip), written atomically.

    The file is written next to its destination and renamed into place, so a crash never leaves a
    half-written checkpoint. An existing file is only replaced when `overwrite` is true. `head`
    (two bytes) replaces the zip's `PK`, as the official writer tags v2Pro/v2ProPlus exports; the
    archive is then saved through memory, so its root folder is `archive/` as in official files.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(path, "already exists; refusing to overwrite it")
    with atomic_file(path) as tmp:
        if head is None:
            torch.save(obj, tmp, pickle_module=_OfficialPickleModule, pickle_protocol=2)
        else:
            if len(head) != 2:
                raise ValueError(f"a version tag is two bytes, got {head!r}")
            buf = io.BytesIO()
            torch.save(obj, buf, pickle_module=_OfficialPickleModule, pickle_protocol=2)
            data = buf.getvalue()
            tmp.write_bytes(head + data[2:])
    return path
