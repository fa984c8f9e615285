"""Local paths and URIs that pyarrow's filesystems read (``file://``, ``s3://``, ``gs://``, ``hdfs://``...).

Everything here only reads. A plain string without a ``scheme://`` prefix is a local path.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def is_uri(location: str) -> bool:
    """True for ``scheme://...`` strings (a Windows drive path such as ``C:\\x`` is not one)."""
    return bool(_SCHEME.match(location))


def parent(location: str) -> str:
    """The folder holding `location` (a URI stays a URI)."""
    if is_uri(location):
        scheme, rest = location.split("://", 1)
        return f"{scheme}://{posixpath.dirname(rest)}"
    return str(Path(location).resolve().parent)


def join(folder: str, relative: str) -> str:
    """`relative` resolved against `folder`; an absolute path or a URI is returned as given."""
    if is_uri(relative) or Path(relative).is_absolute():
        return relative
    if is_uri(folder):
        scheme, rest = folder.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, relative))}"
    return str(Path(folder) / relative)


def basename(location: str) -> str:
    """Last path component; Windows separators count too (official list files often hold Windows paths)."""
    return PurePosixPath(location.replace("\\", "/")).name


def looks_like_windows_path(location: str) -> bool:
    return bool(_WINDOWS_DRIVE.match(location)) or "\\" in location


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), str(Path(location).absolute())


def exists(location: str) -> bool:
    """True if `location` is an existing file."""
    fs, path = _filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(location: str) -> bytes:
    """The whole file; `FileNotFoundError` naming it when there is no such file."""
    fs, path = _filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"no such file: {location}")
    with fs.open_input_stream(path) as f:
        return f.read()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
