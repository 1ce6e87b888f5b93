"""Node-local, content-addressed cache of downloaded weight files.

Layout under the cache root (``PLATFORM_PRETRAINED_CACHE``, default
``~/.cache/platform/pretrained``)::

    objects/<sha[:2]>/<sha256><ext>       the verified files, named by their SHA-256
    index/<store id>/<key>.json           which blob a store's key resolved to (offline mode)
    locks/<name>.lock                     one lock per blob: a node downloads each file once
    tmp/<name>.<pid>.<rand>.part          downloads in progress

A download goes to ``tmp/``, is checked against the size and SHA-256 of the store's
``.meta.json`` and only then renamed into ``objects/`` (``os.replace`` is atomic), so a
killed or failed download never leaves a complete-looking file. Concurrent trials on a
node take the blob's file lock (``filelock``, which torch already depends on; it uses
``fcntl`` locks on Linux); the first downloads, the others wait and find the blob there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from platform.pretrained._scrub import scrub
from platform.pretrained.backends import Store, atomic_write_bytes
from platform.pretrained.meta import WeightMeta, key_suffix, sha256_file, utc_now

log = logging.getLogger(__name__)

_VERIFIED: set[str] = set()  # cached blobs whose sha256 this process has checked


class ChecksumError(Exception):
    """A downloaded file does not match its metadata (internal; re-raised as a UserError)."""

    def __init__(self, key: str, expected: str, actual: str, what: str = "sha256"):
        super().__init__(f"{what} of {key!r}: expected {expected}, got {actual}")
        self.key, self.expected, self.actual, self.what = key, expected, actual, what


@dataclass(frozen=True)
class FetchResult:
    """Outcome of getting a weight file onto this node."""

    key: str
    path: Path
    meta: WeightMeta
    origin: str  # "store", "cache" (offline fallback), "local", "hub"
    downloaded: bool  # True only for the process that actually transferred the bytes
    store: str  # where it came from, safe to print


def default_cache_dir() -> Path:
    env = os.environ.get("PLATFORM_PRETRAINED_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "platform" / "pretrained"


def _lock_timeout() -> float:
    try:
        return float(os.environ.get("PLATFORM_PRETRAINED_LOCK_TIMEOUT", "3600"))
    except ValueError:
        return 3600.0


class Cache:
    """Content-addressed weight cache shared by every process of a node."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser().resolve() if root else default_cache_dir().resolve()

    # -- paths ----------------------------------------------------------------------------
    def blob_path(self, sha256: str, suffix: str = "") -> Path:
        return self.root / "objects" / sha256[:2] / f"{sha256}{suffix}"

    def _index_path(self, store_id: str, key: str) -> Path:
        return self.root / "index" / store_id / f"{key}.json"

    @contextlib.contextmanager
    def lock(self, name: str, what: str) -> Iterator[None]:
        """Hold the node-wide lock ``name``; log once if another process holds it."""
        lock_dir = self.root / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_dir / f"{name}.lock"), is_singleton=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting for another process on this node to finish downloading %s", what)
            try:
                lock.acquire(timeout=_lock_timeout())
            except Timeout:
                raise TimeoutError(
                    f"gave up waiting for the download lock of {what} ({lock_dir / (name + '.lock')}); "
                    "if no other process is downloading it, delete that lock file."
                ) from None
        try:
            yield
        finally:
            lock.release()

    # -- index ----------------------------------------------------------------------------
    def lookup(self, store_id: str, key: str) -> tuple[Path, WeightMeta, dict[str, Any]] | None:
        """The blob a store's key last resolved to, if it is still in the cache."""
        index = self._index_path(store_id, key)
        try:
            entry = json.loads(index.read_text())
            path = self.root / entry["blob"]
            meta = WeightMeta.from_mapping(entry["meta"], where=str(index))
        except Exception:  # missing or broken index entry: a cache miss
            return None
        meta.etag = entry.get("etag")
        if path.is_file() and path.stat().st_size == meta.size:
            return path, meta, entry
        return None

    def record(self, store_id: str, key: str, meta: WeightMeta, blob: Path, *, etag: str | None = None) -> None:
        data = json.loads(meta.to_json())
        data["sha256"] = data["sha256"] or blob.name[:64]
        entry = {
            "key": key,
            "blob": blob.relative_to(self.root).as_posix(),
            "meta": data,
            "etag": etag,
            "fetched": utc_now(),
        }
        atomic_write_bytes(self._index_path(store_id, key), (json.dumps(entry, indent=2) + "\n").encode())

    def _valid(self, blob: Path, size: int, sha256: str | None, verify: bool) -> bool:
        """Size always; the sha256 the first time this process uses the blob, and with ``verify``
        every time (a cached file damaged on disk is downloaded again, never trained from)."""
        if not blob.is_file() or blob.stat().st_size != size:
            return False
        if sha256 and (verify or str(blob) not in _VERIFIED):
            if sha256_file(blob) != sha256:
                log.warning("cached file %s is corrupt (checksum differs); downloading it again", blob)
                blob.unlink(missing_ok=True)
                return False
            _VERIFIED.add(str(blob))
        return True

    # -- fetching -------------------------------------------------------------------------
    def fetch(self, store: Store, key: str, *, progress: bool = False, verify: bool = False) -> FetchResult:
        """Get ``key`` from ``store`` into the cache (at most one download per node).

        Raises :class:`StoreUnreachable`/:class:`ObjectMissing` from the store and
        :class:`ChecksumError` when the downloaded bytes do not match the metadata.
        """
        meta = store.read_meta(key)
        suffix = key_suffix(key)
        if meta.sha256:
            blob = self.blob_path(meta.sha256, suffix)
            lock_name = f"sha-{meta.sha256}"
        else:
            # No .meta.json in the store (files put there by hand): identify the version by
            # ETag and size, hash what we download, and say that nothing could be verified.
            hit = self.lookup(store.store_id, key)
            if hit and hit[2].get("etag") == meta.etag and hit[1].size == meta.size:
                return FetchResult(key, hit[0], hit[1], "store", False, store.describe())
            blob = None
            lock_name = "key-" + hashlib.sha256(f"{store.store_id}/{key}".encode()).hexdigest()[:32]

        if blob is not None and self._valid(blob, meta.size, meta.sha256, verify):
            self.record(store.store_id, key, meta, blob)
            return FetchResult(key, blob, meta, "store", False, store.describe())

        with self.lock(lock_name, key):
            if blob is not None and self._valid(blob, meta.size, meta.sha256, verify=False):
                self.record(store.store_id, key, meta, blob)  # another process got it meanwhile
                return FetchResult(key, blob, meta, "store", False, store.describe())
            if blob is None:
                hit = self.lookup(store.store_id, key)
                if hit and hit[2].get("etag") == meta.etag and hit[1].size == meta.size:
                    return FetchResult(key, hit[0], hit[1], "store", False, store.describe())
            path, meta = self._download(store, key, meta, lock_name, suffix, progress)
            self.record(store.store_id, key, meta, path, etag=meta.etag)
            return FetchResult(key, path, meta, "store", True, store.describe())

    def _download(self, store: Store, key: str, meta: WeightMeta, lock_name: str, suffix: str,
                  progress: bool) -> tuple[Path, WeightMeta]:
        """Download under the held lock into tmp/, verify, rename into objects/."""
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        for stale in tmp_dir.glob(f"{lock_name}.*"):  # left by killed processes; we hold the lock
            stale.unlink(missing_ok=True)
        tmp = tmp_dir / f"{lock_name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
        log.info("downloading %s (%s) from %s", key, _human(meta.size), scrub(store.describe()))
        try:
            with _progress_bar(meta.size, key, progress) as update:
                store.download(key, tmp, update)
            size = tmp.stat().st_size
            if size != meta.size:
                raise ChecksumError(key, f"{meta.size} bytes", f"{size} bytes", what="size")
            actual = sha256_file(tmp)
            if meta.sha256 and actual != meta.sha256:
                raise ChecksumError(key, meta.sha256, actual)
            if not meta.sha256:
                log.warning(
                    "%s has no %s in %s: its checksum could not be verified (sha256 %s). Re-upload it with "
                    "`python -m platform.pretrained upload` to add metadata.",
                    key, key.rsplit("/", 1)[-1] + ".meta.json", scrub(store.describe()), actual,
                )
                meta = dataclasses.replace(meta, sha256=actual)
            blob = self.blob_path(actual, suffix)
            blob.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, blob)
            _VERIFIED.add(str(blob))  # hashed on the way in
            return blob, meta
        finally:
            tmp.unlink(missing_ok=True)

    def add_file(self, store_id: str, key: str, src: Path, meta: WeightMeta) -> Path:
        """Move a verified file produced elsewhere (hub download) into the cache."""
        blob = self.blob_path(meta.sha256 or sha256_file(src), key_suffix(key))
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(src, 0o644)
        os.replace(src, blob)
        self.record(store_id, key, meta, blob)
        return blob

    def tmp_path(self, name: str) -> Path:
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        return tmp_dir / f"{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


@contextlib.contextmanager
def _progress_bar(total: int, key: str, enabled: bool) -> Iterator[Callable[[int], Any]]:
    """A tqdm byte counter (to stderr) when ``enabled``; a no-op callback otherwise."""
    if not enabled:
        yield lambda n: None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
              desc=key.rsplit("/", 1)[-1], leave=False) as bar:
        yield bar.update


progress_bar = _progress_bar
