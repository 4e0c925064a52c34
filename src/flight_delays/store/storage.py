"""Where the artifacts live: a local folder (the project root, by default) or any fsspec
file system by URL, e.g. ``s3://bucket/prefix``, set by $FLIGHT_DELAYS_STORAGE_URL.

A module of its own because a local disk and an object store differ in exactly the
things this module holds, and nothing else in the package needs to know it:

- how a location (the storage URL, or a path recorded in XCom, the registry or a
  manifest) becomes a path: a :class:`pathlib.Path` on a local disk, else a
  :class:`upath.UPath` (universal-pathlib over fsspec, s3fs for S3). Both have the same
  methods (``/``, ``exists``, ``read_bytes``, ``open``, ``glob`` ...), so the steps use
  either without asking which;
- how a whole file is written atomically (:func:`atomic_path`): on a local disk a
  temporary name beside the final one, fsync, a rename, then an fsync of the folder (so
  the rename itself survives a power loss); on an object store a local
  temporary file uploaded in one PUT, which makes the object appear whole or not at all;
- how a folder is moved or deleted (a rename on a local disk; on an object store, where a
  folder is only a key prefix, object by object);
- a lock for the publishing step of a day (a lock on the local folder; for an object
  store, on a local file named after the URL): `score` takes it only with a SQLite
  registry; with PostgreSQL its day lock is an advisory lock that orders every host
  (flight_delays.store.registry.day_lock).

The I/O itself is universal-pathlib's and fsspec's: no file-system layer of our own.
They are imported only when a remote location is used, so this module, and the artifact
catalog that imports it, need only the standard library (airflow-init lists the
catalog's folders with any python; parsing the DAG stays light).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlsplit

from flight_delays.base.errors import PipelineDataError

if TYPE_CHECKING:
    from upath import UPath

#: The environment variable that names the artifact root (default: the project root).
ENV_STORAGE_URL = "FLIGHT_DELAYS_STORAGE_URL"
#: fsspec options for every remote root. No listing cache: another worker's new objects
#: (a partition's commit marker, a report) are seen at once by a long-lived process.
REMOTE_OPTIONS = {"use_listings_cache": False}

#: A local path or a path in an fsspec file system.
ArtifactPath: TypeAlias = "Path | UPath"


class StorageURLError(PipelineDataError):
    """The storage URL names no usable file system (unknown protocol, missing driver, no
    bucket): says which setting holds it."""


def is_local(path: ArtifactPath) -> bool:
    """Whether ``path`` is on the local disk (a :class:`pathlib.Path`; remote UPaths are
    not Paths)."""
    return isinstance(path, Path)


def _remote(url: str, what: str) -> UPath:
    from upath import UPath

    parts = urlsplit(url)
    if parts.scheme in ("s3", "s3a", "gs", "gcs", "az", "abfs") and not parts.netloc:
        raise StorageURLError(f"{what} {url!r} names no bucket: use {parts.scheme}://bucket/prefix")
    try:
        path = UPath(url, **REMOTE_OPTIONS)
        path.fs  # noqa: B018 - builds the file system: an unknown or uninstalled one fails here
    except ValueError as exc:
        raise StorageURLError(
            f"{what} {url!r}: unknown storage protocol {parts.scheme!r} ({exc}); use a local "
            "folder or an fsspec URL such as s3://bucket/prefix"
        ) from exc
    except ImportError as exc:
        raise StorageURLError(
            f"{what} {url!r}: the {parts.scheme!r} protocol needs a driver that is not "
            f"installed ({exc})"
        ) from exc
    return path


def locate(location: str | os.PathLike[str], what: str = "artifact location") -> ArtifactPath:
    """The path a location names: a URL with a protocol (``s3://...``) gives a UPath, a
    local path or ``file://`` URL a Path. A Path or UPath is returned as it is.
    ``what`` names the location in errors (e.g. the setting it came from)."""
    if isinstance(location, Path):
        return location
    if not isinstance(location, (str, os.PathLike)):
        return location  # a UPath (remote UPaths are neither str nor os.PathLike)
    text = os.fspath(location)
    scheme = urlsplit(text).scheme
    if scheme in ("", "file", "local") or len(scheme) == 1:  # one letter: a Windows drive
        return Path(urlsplit(text).path if scheme in ("file", "local") else text)
    return _remote(text, what)


def storage_root(home: Path, url: str | None = None) -> ArtifactPath:
    """The artifact root: ``url``, else $FLIGHT_DELAYS_STORAGE_URL, else ``home`` (the
    local project root). A relative local path is taken relative to ``home``."""
    url = url if url is not None else os.environ.get(ENV_STORAGE_URL)
    if not url:
        return home
    root = locate(url.rstrip("/") or url, f"{ENV_STORAGE_URL}=")
    return (home / root).resolve() if is_local(root) else root


def relative(path: ArtifactPath, root: ArtifactPath) -> str:
    """``path`` relative to ``root`` (POSIX), for either kind of path."""
    if is_local(path):
        return Path(path).relative_to(root).as_posix()
    base = str(root).rstrip("/") + "/"
    text = str(path)
    if not text.startswith(base):
        raise ValueError(f"{text} is not under {root}")
    return text[len(base) :]


def listing(root: UPath, under: str, folders: bool = False) -> list[str]:
    """Every object under the folder ``under`` of the remote ``root`` (and, with
    ``folders``, every folder their names imply), relative to ``root``, sorted: one
    recursive listing (paged by the store), not a request per folder."""
    base = root.path.rstrip("/") + "/"
    top = base + under.strip("/") if under.strip("/") else root.path
    return sorted(name[len(base) :] for name in root.fs.find(top, withdirs=folders))


# --- writing ----------------------------------------------------------------------------
@contextmanager
def atomic_path(final: ArtifactPath, exclusive: bool = False) -> Iterator[Path]:
    """Yield a local temporary path; when the block succeeds, ``final`` becomes its bytes
    at once, else ``final`` is left as it was.

    Local: the temporary file lies beside ``final`` (``.<name>.<random>.tmp``), is
    fsynced and renamed over it, and the folder is fsynced. Object store: it lies in a
    local temporary folder and is uploaded in one PUT (a multi-part upload above 100 MB,
    which S3 also makes visible only when complete). ``exclusive``: fail with
    FileExistsError instead of replacing an existing ``final`` (on S3 a conditional PUT,
    ``If-None-Match: *``).
    """
    if is_local(final):
        with _local_atomic_path(Path(final), exclusive) as tmp:
            yield tmp
        return
    with tempfile.TemporaryDirectory(prefix="flight-delays-upload-") as folder:
        tmp = Path(folder) / final.name  # the final's name: s3fs sets the content type by it
        yield tmp
        final.fs.put_file(str(tmp), final.path, mode="create" if exclusive else "overwrite")


@contextmanager
def _local_atomic_path(final: Path, exclusive: bool) -> Iterator[Path]:
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; artifacts are shared with other users (web UI, containers).
    tmp.chmod(0o644)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, final)  # fails with FileExistsError, never replaces
        else:
            os.replace(tmp, final)
        # The rename is an entry in the folder: until the folder is synced too, a power
        # loss can bring back the old file (or none) even though the new bytes are on disk.
        fsync_folder(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename or a new name in it) to the disk. Local
    folders only: an object store has no folder to sync."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- folders ----------------------------------------------------------------------------
def move_folder(source: ArtifactPath, target: ArtifactPath, last: Sequence[str] = ()) -> None:
    """Move the folder ``source`` to ``target`` (which must not exist).

    Local: one rename. Object store: every object is copied (the names in ``last``, e.g.
    a commit marker, after the others), then deleted (those in ``last`` first), so a
    reader never finds a marker beside a partial set of files, at either end.
    """
    if is_local(source):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)
        # Both folders changed: the entry left one and arrived in the other.
        fsync_folder(Path(target).parent)
        if Path(source).parent != Path(target).parent:
            fsync_folder(Path(source).parent)
        return
    fs, prefix = source.fs, source.path.rstrip("/") + "/"
    names = sorted(key[len(prefix) :] for key in fs.find(source.path))
    order = [n for n in names if n not in last] + [n for n in last if n in names]
    for name in order:
        fs.copy(f"{source.path}/{name}", f"{target.path}/{name}")
    for name in reversed(order):
        fs.rm_file(f"{source.path}/{name}")
    if fs.exists(source.path):  # stores that keep folders of their own (memory://, sftp)
        fs.rm(source.path, recursive=True)


def remove(path: ArtifactPath) -> None:
    """Delete a file or a whole folder (every object under the prefix)."""
    if is_local(path):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        return
    if path.is_dir():
        path.fs.rm(path.path, recursive=True)
    elif path.exists():
        path.fs.rm_file(path.path)


# --- locking ----------------------------------------------------------------------------
@contextmanager
def lock(folder: ArtifactPath) -> Iterator[None]:
    """An exclusive lock for ``folder``, dropped by the kernel if the process dies.

    Local: a lock on the folder itself (created if needed), so no lock file is left
    behind. Object store: objects cannot be locked, so the lock is on a local file named
    after the URL in the system's temporary folder (readable by all: a read-only
    descriptor is enough to lock it): it orders the processes of one machine only
    (docs/architecture.md, "Storage by URL"). The holder deletes that file before it
    lets go, so none is left behind either (:func:`_locked_file` says why that is safe).
    """
    if is_local(folder):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(folder), os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
        return
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:32]
    target = os.path.join(tempfile.gettempdir(), f"flight-delays-lock-{digest}")
    fd = _locked_file(target)
    try:
        yield
    finally:
        # Deleted while still held: a process that opened it meanwhile finds, once it gets
        # the lock, that it holds a file no longer at ``target`` and opens it again. A file
        # another user left in a sticky /tmp cannot be deleted: it stays, and still works.
        try:
            with suppress(FileNotFoundError, PermissionError):
                os.unlink(target)
        finally:
            os.close(fd)


def _locked_file(target: str) -> int:
    """A descriptor of the file at ``target`` (created if missing), locked, and still the
    file at ``target`` once locked. A holder deletes the file before it lets go, so a
    waiter may get the lock of a deleted file (or of one replaced since): it opens the
    path again, until the file it locked is the one there. Only the holder of the file at
    ``target`` deletes it, so at most one process at a time holds that file's lock.

    An existing file is opened without O_CREAT: with ``fs.protected_regular`` (systemd's
    default) the kernel refuses an O_CREAT open of another user's file in a sticky folder
    such as /tmp, even read-only. O_NOFOLLOW: a link planted there is refused."""
    while True:
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            try:
                fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                continue  # created by another process in between: open that one
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                there = os.stat(target, follow_symlinks=False)
            except FileNotFoundError:
                there = None
        except BaseException:
            os.close(fd)
            raise
        if there is not None and (there.st_dev, there.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)
