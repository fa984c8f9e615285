"""Writing files and folders so that a crash never leaves a half-written one.

Every writer in voicefleet stages its output beside the destination and renames it into place
when complete: checkpoints, audio, pretrained folders, datasets, clips, exports, registry copies.
The two context managers here are that pattern, written once.

    with atomic_file(path) as tmp:          # tmp: a Path beside `path`
        torch.save(obj, tmp)
    with atomic_folder(out_dir, replace=True) as staging:
        (staging / "data.parquet").write_bytes(...)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# read once at import: os.umask can only be read by setting it, which is not thread-safe
FILE_MODE = 0o666 & ~_read_umask()
DIR_MODE = 0o777 & ~_read_umask()


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` (one rename).

    On an exception the temporary file is removed and `path` is left as it was. The file gets the
    usual permissions (mkstemp creates 0600). The caller decides beforehand whether an existing
    `path` may be replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside `path`; on success it becomes `path`.

    With `replace`, an existing `path` is moved aside first and deleted only once the new folder
    is in place (restored if the final rename fails); without it, an existing non-empty `path`
    raises `FileExistsError` before anything is written. On an exception the staging folder is
    removed and `path` is untouched.
    """
    path = Path(path)
    if not replace and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} already exists and is not empty")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".staging", dir=path.parent))
    try:
        yield staging
        os.chmod(staging, DIR_MODE)  # mkdtemp creates 0700
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            path.rename(old)
        try:
            staging.rename(path)
        except BaseException:
            if old is not None:
                old.rename(path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
