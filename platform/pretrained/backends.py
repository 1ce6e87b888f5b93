"""Where weight files live: a local folder or any S3-compatible bucket (AWS S3, MinIO).

Both backends hold ``<key>`` next to ``<key>.meta.json`` and ``README.md`` objects that
describe the folders. A store is named by one URL (``s3://models/pretrained_models`` or a
folder path) plus, for S3, an optional endpoint URL (MinIO) and region. Credentials come
only from the standard AWS chain (environment variables, ``~/.aws`` files, ``AWS_PROFILE``,
instance roles); nothing here accepts, stores or prints them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from platform.errors import ConfigError, UserError
from platform.pretrained._scrub import install_log_scrubber, register_secrets, scrub, scrub_url
from platform.pretrained.meta import META_SUFFIX, README_NAME, WeightMeta

log = logging.getLogger(__name__)

Progress = Callable[[int], Any]


class StoreError(UserError):
    """The store refused a request (bad bucket, access denied, invalid settings)."""


class StoreUnreachable(Exception):
    """The store cannot be reached right now (network, endpoint down, no credentials).

    Internal: :func:`platform.pretrained.resolve` answers it by falling back to the cache.
    The message is already scrubbed of credentials.
    """


class ObjectMissing(Exception):
    """The store is reachable but has no such weight file."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class Store(ABC):
    """A place that holds weight files and their metadata."""

    remote: bool = False

    @property
    @abstractmethod
    def url(self) -> str:
        """The store's URL, safe to print (no credentials)."""

    @property
    def store_id(self) -> str:
        """A stable file-name-safe id for the cache index (no credentials)."""
        digest = hashlib.sha256(self.describe().encode()).hexdigest()[:12]
        return f"{type(self).__name__.lower()}-{digest}"

    def describe(self) -> str:
        """Human-readable location, safe to print."""
        return self.url

    def public_config(self) -> dict[str, Any]:
        """Settings to log (e.g. as MLflow params); never contains credentials."""
        return {"pretrained_store": self.url}

    @abstractmethod
    def read_meta(self, key: str) -> WeightMeta:
        """Metadata of ``key`` (synthesised without sha256 when the meta file is absent)."""

    @abstractmethod
    def download(self, key: str, dest: Path, progress: Progress | None = None) -> None:
        """Copy the weight file to ``dest`` (a temporary path chosen by the cache)."""

    @abstractmethod
    def upload_file(self, path: Path, key: str, meta: WeightMeta, progress: Progress | None = None) -> None:
        """Store the file under ``key``, then its metadata (readers never see meta for a partial file)."""

    @abstractmethod
    def put_text(self, relpath: str, text: str) -> None:
        """Write a small text object (README) at ``relpath`` under the store root."""

    @abstractmethod
    def exists(self, relpath: str) -> bool:
        """Whether an object exists at ``relpath`` under the store root."""

    @abstractmethod
    def list_objects(self, prefix: str = "") -> list[str]:
        """Every object path under the root (weights, meta files, READMEs), sorted."""

    def object_size(self, relpath: str) -> int | None:
        """The stored object's size in bytes (None when absent): what the metadata promises is checked
        against what is really there."""
        return None

    def ensure_root(self) -> None:
        """Create the bucket/folder if needed (``setup``)."""

    def list_keys(self, prefix: str = "") -> list[str]:
        """Weight-file keys under ``prefix`` (meta files and READMEs left out)."""
        return [
            o for o in self.list_objects(prefix)
            if not o.endswith(META_SUFFIX) and o.rsplit("/", 1)[-1] != README_NAME
            and not o.rsplit("/", 1)[-1].startswith(".")
        ]

    def local_path(self, key: str) -> Path | None:
        """Path of ``key`` when the store is a local folder (no copy needed)."""
        return None


class LocalStore(Store):
    """A plain folder: ``<root>/<key>`` and ``<root>/<key>.meta.json``."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    @property
    def url(self) -> str:
        return str(self.root)

    def local_path(self, key: str) -> Path:
        return self.root / key

    def read_meta(self, key: str) -> WeightMeta:
        path = self.root / key
        meta_path = path.with_name(path.name + META_SUFFIX)
        if not path.is_file():
            raise ObjectMissing(f"{path} does not exist")
        size = path.stat().st_size
        if meta_path.is_file():
            meta = WeightMeta.from_json(meta_path.read_text(), where=str(meta_path))
            meta.key = key
            return meta
        return WeightMeta(key=key, sha256=None, size=size)

    def download(self, key: str, dest: Path, progress: Progress | None = None) -> None:
        src = self.root / key
        if not src.is_file():
            raise ObjectMissing(f"{src} does not exist")
        with open(src, "rb") as fin, open(dest, "wb") as fout:
            while block := fin.read(8 << 20):
                fout.write(block)
                if progress:
                    progress(len(block))

    def upload_file(self, path: Path, key: str, meta: WeightMeta, progress: Progress | None = None) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fout, open(path, "rb") as fin:
                while block := fin.read(8 << 20):
                    fout.write(block)
                    if progress:
                        progress(len(block))
                fout.flush()
                os.fsync(fout.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        atomic_write_bytes(dest.with_name(dest.name + META_SUFFIX), meta.to_json().encode())

    def put_text(self, relpath: str, text: str) -> None:
        atomic_write_bytes(self.root / relpath, text.encode())

    def exists(self, relpath: str) -> bool:
        return (self.root / relpath).exists()

    def object_size(self, relpath: str) -> int | None:
        path = self.root / relpath
        return path.stat().st_size if path.is_file() else None

    def ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def list_objects(self, prefix: str = "") -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return []
        if base.is_file():
            return [prefix]
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        )


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not a number.") from None


class S3Store(Store):
    """``s3://bucket/prefix`` on AWS S3 or any S3-compatible endpoint (MinIO)."""

    remote = True

    def __init__(self, url: str, *, endpoint_url: str | None = None, region: str | None = None):
        if not url.startswith("s3://"):
            raise ConfigError(f"store URL {scrub(url)!r} is not an s3:// URL.")
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise ConfigError(
                f"store URL {scrub(url)!r} has no bucket; write it as s3://<bucket>/<prefix>, "
                "e.g. s3://models/pretrained_models."
            )
        if endpoint_url is not None and not endpoint_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"pretrained store endpoint {scrub(endpoint_url)!r} must start with http:// or https:// "
                "(e.g. http://localhost:9000 for MinIO); set PLATFORM_PRETRAINED_ENDPOINT."
            )
        if endpoint_url is not None and scrub_url(endpoint_url) != endpoint_url:
            raise ConfigError(
                f"pretrained store endpoint {scrub_url(endpoint_url)!r} carries a user name/password: remove "
                "them from the URL and provide the credentials through the standard AWS chain "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials)."
            )
        install_log_scrubber()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self._client = None
        self._transfer_config = None

    # -- naming ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def describe(self) -> str:
        if self.endpoint_url:
            return f"{self.url} at {scrub_url(self.endpoint_url)}"
        return self.url

    def public_config(self) -> dict[str, Any]:
        return {
            "pretrained_store": self.url,
            "pretrained_endpoint": scrub_url(self.endpoint_url) or "",
            "pretrained_region": self.region or "",
        }

    def _obj(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    # -- client ---------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session(region_name=self.region)
            creds = session.get_credentials()
            if creds is None:
                raise StoreUnreachable(
                    "no AWS credentials were found in the standard chain (AWS_ACCESS_KEY_ID/"
                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws/credentials, or an instance role)"
                )
            frozen = creds.get_frozen_credentials()
            register_secrets([frozen.access_key, frozen.secret_key, frozen.token])
            config = Config(
                connect_timeout=_env_float("PLATFORM_PRETRAINED_CONNECT_TIMEOUT", 5.0),
                read_timeout=_env_float("PLATFORM_PRETRAINED_READ_TIMEOUT", 60.0),
                retries={"max_attempts": int(_env_float("PLATFORM_PRETRAINED_RETRIES", 3)), "mode": "standard"},
                s3={"addressing_style": "path"} if self.endpoint_url else {},
            )
            self._client = session.client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
            )
        return self._client

    @property
    def transfer_config(self):
        if self._transfer_config is None:
            from boto3.s3.transfer import TransferConfig

            self._transfer_config = TransferConfig(
                multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=8
            )
        return self._transfer_config

    @contextlib.contextmanager
    def _translate(self, what: str, relpath: str) -> Iterator[None]:
        """Map botocore errors to StoreUnreachable / ObjectMissing / StoreError, scrubbed."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError as BotoConnectionError,
            HTTPClientError,
            NoCredentialsError,
        )
        from s3transfer.exceptions import RetriesExceededError

        try:
            yield
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
            detail = scrub(err.get("Message") or code)
            log.debug("%s %s failed: %s", what, relpath, scrub(exc))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectMissing(f"{self._obj(relpath)} not found in bucket {self.bucket}") from None
            if code == "NoSuchBucket":
                raise StoreError(
                    f"bucket {self.bucket!r} does not exist at {self.describe()}; create it with "
                    "`python -m platform.pretrained setup` or fix PLATFORM_PRETRAINED_STORE."
                ) from None
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
                raise StoreUnreachable(f"{code or status}: {detail}") from None
            raise StoreError(
                f"{what} {self._obj(relpath)!r} on {self.describe()} was refused ({code}: {detail}). "
                "Check the credentials in the standard AWS chain (environment, AWS_PROFILE, "
                "~/.aws/credentials) and the bucket policy."
            ) from None
        except NoCredentialsError:
            raise StoreUnreachable("no AWS credentials were found in the standard chain") from None
        except (BotoConnectionError, HTTPClientError, RetriesExceededError) as exc:
            raise StoreUnreachable(scrub(exc)) from None
        except BotoCoreError as exc:
            raise StoreError(f"{what} {self._obj(relpath)!r} on {self.describe()} failed: {scrub(exc)}") from None

    # -- operations -----------------------------------------------------------------------
    def read_meta(self, key: str) -> WeightMeta:
        meta_rel = key + META_SUFFIX
        try:
            with self._translate("reading", meta_rel):
                body = self.client.get_object(Bucket=self.bucket, Key=self._obj(meta_rel))["Body"].read()
            meta = WeightMeta.from_json(body, where=f"{self.url}/{meta_rel}")
            meta.key = key
            return meta
        except ObjectMissing:
            pass
        with self._translate("reading", key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._obj(key))
        return WeightMeta(key=key, sha256=None, size=int(head["ContentLength"]), etag=head.get("ETag"))

    def download(self, key: str, dest: Path, progress: Progress | None = None) -> None:
        with self._translate("downloading", key):
            self.client.download_file(
                self.bucket, self._obj(key), str(dest), Callback=progress, Config=self.transfer_config
            )

    def upload_file(self, path: Path, key: str, meta: WeightMeta, progress: Progress | None = None) -> None:
        with self._translate("uploading", key):
            self.client.upload_file(
                str(path), self.bucket, self._obj(key), Callback=progress, Config=self.transfer_config
            )
        self.put_text(key + META_SUFFIX, meta.to_json(), content_type="application/json")

    def put_text(self, relpath: str, text: str, content_type: str = "text/markdown; charset=utf-8") -> None:
        with self._translate("writing", relpath):
            self.client.put_object(
                Bucket=self.bucket, Key=self._obj(relpath), Body=text.encode(), ContentType=content_type
            )

    def exists(self, relpath: str) -> bool:
        try:
            with self._translate("checking", relpath):
                self.client.head_object(Bucket=self.bucket, Key=self._obj(relpath))
            return True
        except ObjectMissing:
            return False

    def object_size(self, relpath: str) -> int | None:
        try:
            with self._translate("checking", relpath):
                return int(self.client.head_object(Bucket=self.bucket, Key=self._obj(relpath))["ContentLength"])
        except ObjectMissing:
            return None

    def ensure_root(self) -> None:
        with self._translate("checking bucket", ""):
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except Exception as exc:  # only a 404 means "create it"; everything else re-raises
                status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status != 404:
                    raise
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.region and self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            self.client.create_bucket(**kwargs)
            log.info("created bucket %s at %s", self.bucket, scrub_url(self.endpoint_url) or "AWS S3")

    def list_objects(self, prefix: str = "") -> list[str]:
        root = f"{self.prefix}/" if self.prefix else ""
        full = root + prefix.strip("/") if prefix else root
        out: list[str] = []
        with self._translate("listing", prefix or "/"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                out.extend(obj["Key"][len(root):] for obj in page.get("Contents", []))
        return sorted(out)


def open_store(url: str | os.PathLike | None, *, endpoint_url: str | None = None,
               region: str | None = None) -> Store:
    """A store for ``url``: ``s3://bucket/prefix`` -> :class:`S3Store`, a folder -> :class:`LocalStore`."""
    text = os.fspath(url) if url is not None else ""
    if text.startswith("s3://"):
        return S3Store(text, endpoint_url=endpoint_url, region=region)
    if "://" in text and not text.startswith("file://"):
        raise ConfigError(
            f"pretrained store {scrub(text)!r}: only s3:// URLs (AWS S3, MinIO) and local folders are "
            "supported; set PLATFORM_PRETRAINED_STORE to e.g. s3://models/pretrained_models."
        )
    text = text.removeprefix("file://")
    return LocalStore(text)
