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

import errno
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

    Without `replace`, `path` must be absent or an empty folder: anything else raises
    `FileExistsError`, before anything is written and again (the staging folder then removed) if
    something appeared at `path` meanwhile, so nothing there is ever overwritten. With `replace`,
    an existing `path` is moved aside first and deleted only once the new folder is in place; it
    is put back if the final rename fails. On an exception the staging folder is removed and
    `path` is left as it was.
    """
    path = Path(path)
    if not replace:
        _check_free(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".staging", dir=path.parent))
    try:
        yield staging
        os.chmod(staging, DIR_MODE)  # mkdtemp creates 0700
        if not replace:
            _rename_onto_free(staging, path)
            return
        old = None
        if path.exists() or path.is_symlink():
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
            _remove(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_free(path: Path) -> None:
    if path.is_symlink() or (path.exists() and (not path.is_dir() or any(path.iterdir()))):
        raise FileExistsError(f"{path} already exists and is not empty")


def _rename_onto_free(staging: Path, path: Path) -> None:
    """Rename `staging` to `path`; an empty folder there is replaced (one atomic rename on POSIX),
    anything else raises `FileExistsError` and stays as it is."""
    _check_free(path)
    try:
        staging.rename(path)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(f"{path} already exists and is not empty") from None
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
