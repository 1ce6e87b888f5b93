"""``resolve(key) -> Path``: store first, then the node cache (offline), local folder, hub.

Settings (function arguments win over environment variables):

=================================  ==========================================================
``PLATFORM_PRETRAINED_STORE``      ``s3://models/pretrained_models`` (AWS S3 or MinIO) or a
                                   folder; unset -> the local folder below is the store
``PLATFORM_PRETRAINED_ENDPOINT``   S3 endpoint URL for MinIO etc. (``http://minio:9000``)
``PLATFORM_PRETRAINED_REGION``     S3 region (else the AWS chain's default)
``PLATFORM_PRETRAINED_DIR``        local folder of weight files (default ``.cache/pretrained``)
``PLATFORM_PRETRAINED_CACHE``      node cache for downloads (default ``~/.cache/platform/pretrained``)
``PLATFORM_PRETRAINED_HUB``        ``0`` disables the library-hub fallback
=================================  ==========================================================
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from platform.errors import UserError
from platform.pretrained._scrub import scrub
from platform.pretrained.backends import LocalStore, ObjectMissing, S3Store, Store, StoreUnreachable, open_store
from platform.pretrained.cache import Cache, ChecksumError, FetchResult
from platform.pretrained.hub import hub_enabled, hub_source, network_available
from platform.pretrained.meta import WeightMeta, sha256_file, utc_now, validate_key

log = logging.getLogger(__name__)

ENV_STORE = "PLATFORM_PRETRAINED_STORE"
ENV_ENDPOINT = "PLATFORM_PRETRAINED_ENDPOINT"
ENV_REGION = "PLATFORM_PRETRAINED_REGION"
ENV_DIR = "PLATFORM_PRETRAINED_DIR"
HUB_STORE_ID = "hub"


class WeightsUnavailableError(UserError):
    """A pretrained weight file is neither in the store nor in the cache.

    The message names the key, every place that was tried and what to do.
    """


class ChecksumMismatchError(WeightsUnavailableError):
    """A file does not match the size/SHA-256 of its metadata; it was refused, not cached."""


_stores: dict[tuple[Any, ...], Store] = {}
_stores_lock = threading.Lock()


def local_dir() -> Path:
    """The local weight folder (``PLATFORM_PRETRAINED_DIR``, default ``.cache/pretrained`` in cwd)."""
    return Path(os.environ.get(ENV_DIR) or ".cache/pretrained").expanduser().resolve()


def configured_store(url: str | os.PathLike | None = None, *, endpoint_url: str | None = None,
                     region: str | None = None) -> Store:
    """The store named by the arguments, else by the environment, else the local folder."""
    url = os.fspath(url) if url is not None else os.environ.get(ENV_STORE) or None
    if url is None:
        return LocalStore(local_dir())
    endpoint_url = endpoint_url or os.environ.get(ENV_ENDPOINT) or None
    region = region or os.environ.get(ENV_REGION) or None
    if not str(url).startswith("s3://"):
        return open_store(url)
    cache_key = (url, endpoint_url, region)
    with _stores_lock:  # one boto3 client per store and process
        if cache_key not in _stores:
            _stores[cache_key] = S3Store(url, endpoint_url=endpoint_url, region=region)
        return _stores[cache_key]


def public_config(store: Store | str | None = None) -> dict[str, Any]:
    """Store settings safe to log as MLflow params (no credentials, endpoint without userinfo)."""
    return (store if isinstance(store, Store) else configured_store(store)).public_config()


def _checksum_error(key: str, store: Store, exc: ChecksumError) -> ChecksumMismatchError:
    return ChecksumMismatchError(
        f"pretrained weights {key!r} from {store.describe()} do not match their metadata "
        f"({exc.what} expected {exc.expected}, got {exc.actual}); the file was refused and not cached. "
        f"The object or its {key.rsplit('/', 1)[-1]}.meta.json was changed after upload: re-upload it with "
        "`python -m platform.pretrained upload FILE --group G --arch A --force`."
    )


def pull(key: str, *, store: Store | str | None = None, endpoint_url: str | None = None,
         region: str | None = None, cache: Cache | str | Path | None = None,
         progress: bool | None = None, verify: bool = False, hub: bool | None = None) -> FetchResult:
    """Get the weight file ``key`` onto this node and say where it came from.

    Order: the configured store (verified download into the node cache, once per node);
    if the store is unreachable, the cached copy (with a warning); the local folder; the
    library's hub when the key's group has one and the network is up. ``verify`` re-hashes
    files already on disk. Raises :class:`WeightsUnavailableError` naming the key and every
    place tried, :class:`ChecksumMismatchError` for a corrupt download.
    """
    key = validate_key(key)
    primary = store if isinstance(store, Store) else configured_store(store, endpoint_url=endpoint_url,
                                                                      region=region)
    cache = cache if isinstance(cache, Cache) else Cache(cache)
    progress = sys.stderr.isatty() if progress is None else progress
    tried: list[str] = []

    if primary.remote:
        try:
            return cache.fetch(primary, key, progress=progress, verify=verify)
        except ChecksumError as exc:
            raise _checksum_error(key, primary, exc) from None
        except StoreUnreachable as exc:
            reason = scrub(exc)
            hit = cache.lookup(primary.store_id, key)
            if hit is not None:
                path, meta, entry = hit
                log.warning(
                    "pretrained store %s is unreachable (%s); offline mode: using the cached copy of %s "
                    "(sha256 %s, fetched %s) at %s",
                    primary.describe(), reason, key, (meta.sha256 or "?")[:12], entry.get("fetched", "?"), path,
                )
                return FetchResult(key, path, meta, "cache", False, primary.describe())
            tried.append(f"the store {primary.describe()} is unreachable ({reason}) and the node cache "
                         f"{cache.root} has no copy")
        except ObjectMissing:
            tried.append(f"the store {primary.describe()} has no such file")
        local = LocalStore(local_dir())
    else:
        local = primary if isinstance(primary, LocalStore) else LocalStore(local_dir())

    result = _from_local(local, key, verify)
    if result is not None:
        return result
    tried.append(f"the local folder {local.root} has no such file")

    result = _from_hub(key, cache, progress, hub, tried)
    if result is not None:
        return result

    group = key.split("/", 1)[0]
    raise WeightsUnavailableError(
        f"pretrained weights {key!r} are not available: {'; '.join(tried)}. Upload the file to the store "
        f"with `python -m platform.pretrained upload FILE --group {group} --arch ARCH` (store "
        f"{primary.describe()}), or put it at {local.root / key}; check PLATFORM_PRETRAINED_STORE / "
        "PLATFORM_PRETRAINED_ENDPOINT if the store is the wrong one."
    )


def resolve(key: str, **kwargs: Any) -> Path:
    """Local path of the weight file ``key`` (see :func:`pull` for the order and options)."""
    return pull(key, **kwargs).path


def _from_local(local: LocalStore, key: str, verify: bool) -> FetchResult | None:
    path = local.local_path(key)
    if not path.is_file():
        return None
    meta = local.read_meta(key)
    size = path.stat().st_size
    if meta.sha256 and size != meta.size:
        raise _checksum_error(key, local, ChecksumError(key, f"{meta.size} bytes", f"{size} bytes", "size"))
    if verify and meta.sha256:
        actual = sha256_file(path)
        if actual != meta.sha256:
            raise _checksum_error(key, local, ChecksumError(key, meta.sha256, actual))
    return FetchResult(key, path, meta, "local", False, local.describe())


def _from_hub(key: str, cache: Cache, progress: bool, hub: bool | None, tried: list[str]) -> FetchResult | None:
    source = hub_source(key)
    if source is None:
        tried.append(f"no library hub serves the group {key.split('/', 1)[0]!r}")
        return None
    group, fetcher, host = source
    hit = cache.lookup(HUB_STORE_ID, key)
    if hit is not None:
        return FetchResult(key, hit[0], hit[1], "hub", False, f"{group} hub (cached)")
    if not (hub_enabled() if hub is None else hub):
        tried.append("hub downloads are disabled (PLATFORM_PRETRAINED_HUB=0)")
        return None
    if not network_available(host):
        tried.append(f"the {group} hub ({host}) cannot be reached from this machine")
        return None
    lock_name = "hub-" + hashlib.sha256(key.encode()).hexdigest()[:32]
    with cache.lock(lock_name, key):
        hit = cache.lookup(HUB_STORE_ID, key)
        if hit is not None:
            return FetchResult(key, hit[0], hit[1], "hub", False, f"{group} hub (cached)")
        tmp = cache.tmp_path(lock_name)
        try:
            log.info("%s is not in the store; downloading it from the %s hub (%s)", key, group, host)
            info = fetcher(key, tmp, progress)
            meta = WeightMeta(key=key, sha256=sha256_file(tmp), size=tmp.stat().st_size, date=utc_now(),
                              **{k: v for k, v in info.items() if k in ("source", "licence", "architecture")})
            path = cache.add_file(HUB_STORE_ID, key, tmp, meta)
            log.info("cached %s from the %s hub; mirror it into the store with "
                     "`python -m platform.pretrained upload %s --group %s`", key, group, path, group)
            return FetchResult(key, path, meta, "hub", True, f"{group} hub")
        except Exception as exc:  # any hub failure just ends this attempt; the caller reports it
            log.debug("hub download of %s failed", key, exc_info=True)
            tried.append(f"the {group} hub download failed ({scrub(exc)})")
            return None
        finally:
            tmp.unlink(missing_ok=True)
