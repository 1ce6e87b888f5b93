"""Command line for the pretrained weight store.

    python -m platform.pretrained setup  [--groups G ...] [--arch GROUP/ARCH ...]
    python -m platform.pretrained upload FILE --group G [--arch A] [--source URL] [--licence L]
                                         [--config JSON|@file] [--state-dict-key params] [--force]
    python -m platform.pretrained list   [PREFIX] [--json]
    python -m platform.pretrained pull   KEY [--verify]
    python -m platform.pretrained info   KEY

Global options ``--store s3://models/pretrained_models --endpoint http://minio:9000 --region R
--cache DIR`` override ``PLATFORM_PRETRAINED_STORE/_ENDPOINT/_REGION/_CACHE``. ``setup`` creates
the store's folder layout; ``upload`` copies local weight files into it with their metadata.
Credentials come from the standard AWS chain only and are never printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from platform.errors import ConfigError, cli_main
from platform.pretrained._scrub import install_log_scrubber, scrub
from platform.pretrained.backends import ObjectMissing, Store, StoreError, StoreUnreachable
from platform.pretrained.cache import Cache, progress_bar
from platform.pretrained.meta import (
    META_SUFFIX,
    README_NAME,
    WeightMeta,
    make_key,
    parse_config_arg,
    sha256_file,
    utc_now,
    validate_key,
)
from platform.pretrained.resolver import configured_store, pull

log = logging.getLogger("platform.pretrained.cli")

# The user's folder structure (models/pretrained_models/...) plus mirrors of third-party weights.
DEFAULT_GROUPS: dict[str, str] = {
    "layer_1": "Weights for the layer-1 models.",
    "layer_2": "Weights for the layer-2 (document restoration) models: nafnet/, docunet/.",
    "general": "General-purpose weights shared by several tasks.",
    "torchvision": "Mirror of torchvision checkpoints under their original file names "
                   "(alexnet-owt-7be5be79.pth and vgg16-397923af.pth are LPIPS's trunks).",
    "timm": "Mirror of timm/SMP encoder weights: <model_name>.pth holds the state_dict of "
            "timm.create_model(model_name, pretrained=True).",
}
DEFAULT_ARCHS = ("layer_2/nafnet", "layer_2/docunet")

ROOT_README = """# Pretrained weights

Managed by `python -m platform.pretrained` (setup, upload, list, pull, info).

Layout: `<group>/<architecture>/<file>` (or `<group>/<file>` for third-party mirrors), and beside
every weight file a `<file>.meta.json` with its sha256, size, source, licence, the architecture
and configuration it fits, and the upload date. Trainers resolve weights by key, e.g.
`layer_2/nafnet/NAFNet-SIDD-width64.pth`; every download is verified against the sha256 and
cached once per node, and cached copies are used when this store cannot be reached.

Groups:
{groups}
"""


def _readme_group(group: str, text: str) -> str:
    return f"# {group}\n\n{text}\n\nUpload with `python -m platform.pretrained upload FILE --group {group} --arch ARCH`.\n"


def _readme_arch(group: str, arch: str) -> str:
    return (f"# {group}/{arch}\n\nWeights for the `{arch}` architecture. Each file has a `.meta.json` "
            "naming the configuration it fits (e.g. width, block counts).\n")


def _store_from(args: argparse.Namespace) -> Store:
    return configured_store(args.store, endpoint_url=args.endpoint, region=args.region)


def _needs_store(func):
    """Turn an unreachable store into a clear user error for commands that need it."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except StoreUnreachable as exc:
            store = _store_from(args)
            raise StoreError(
                f"the pretrained store {store.describe()} cannot be reached ({scrub(exc)}). Check "
                "PLATFORM_PRETRAINED_STORE / PLATFORM_PRETRAINED_ENDPOINT (or --store/--endpoint) and the "
                "credentials in the standard AWS chain."
            ) from None

    return wrapper


@_needs_store
def cmd_setup(args: argparse.Namespace) -> int:
    store = _store_from(args)
    store.ensure_root()
    groups = {g: DEFAULT_GROUPS.get(g, f"Weights for {g}.") for g in (args.groups or DEFAULT_GROUPS)}
    archs = list(args.arch or (DEFAULT_ARCHS if not args.groups else ()))
    wanted: dict[str, str] = {
        README_NAME: ROOT_README.format(groups="\n".join(f"- `{g}/`: {t}" for g, t in groups.items())),
    }
    for group, text in groups.items():
        wanted[f"{validate_group(group)}/{README_NAME}"] = _readme_group(group, text)
    for item in archs:
        group, sep, arch = item.partition("/")
        if not sep or not arch:
            raise ConfigError(f"--arch {item!r}: write it as GROUP/ARCH, e.g. layer_2/nafnet.")
        wanted[f"{validate_group(group)}/{validate_group(arch)}/{README_NAME}"] = _readme_arch(group, arch)
    created = 0
    for relpath, text in wanted.items():
        if not args.force and store.exists(relpath):
            log.info("exists: %s", relpath)
            continue
        store.put_text(relpath, text)
        created += 1
        log.info("created: %s", relpath)
    print(f"{store.describe()}: {created} README object(s) written, {len(wanted) - created} already there")
    return 0


def validate_group(name: str) -> str:
    if "/" in name.strip("/"):
        raise ConfigError(f"group/architecture name {name!r} must not contain '/'.")
    validate_key(name + "/x")
    return name.strip("/")


class _Intact:
    def __init__(self, why: str = ""):
        self.why = why

    def __bool__(self) -> bool:
        return not self.why


def _stored_intact(store, key: str, meta: WeightMeta) -> _Intact:
    """Whether the stored object is what its metadata says: its size, and its sha256 where the
    object can be read cheaply (a local store; an S3 object would have to be downloaded)."""
    size = store.object_size(key)
    if size is None:
        return _Intact("the object is missing")
    if size != meta.size:
        return _Intact(f"{size} bytes, the metadata says {meta.size}")
    root = getattr(store, "root", None)
    if root is not None and meta.sha256 and sha256_file(Path(root) / key) != meta.sha256:
        return _Intact("its sha256 differs from the metadata")
    return _Intact()


@_needs_store
def cmd_upload(args: argparse.Namespace) -> int:
    store = _store_from(args)
    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"upload: {path} is not a file; give the path of a weight file (.pth, .safetensors).")
    key = make_key(validate_group(args.group), validate_group(args.arch) if args.arch else None,
                   args.name or path.name)
    size = path.stat().st_size
    with progress_bar(size, f"hashing {path.name}", args.progress) as update:
        sha = sha256_file(path, progress=update)
    meta = WeightMeta(
        key=key, sha256=sha, size=size, source=args.source or f"local file {path.name}",
        licence=args.licence or "", architecture=args.architecture or args.arch or "",
        config=parse_config_arg(args.config), date=utc_now(), state_dict_key=args.state_dict_key,
        notes=args.notes or "",
    )
    try:
        existing: WeightMeta | None = store.read_meta(key)
    except ObjectMissing:
        existing = None
    if existing is not None and not args.force:
        stored = _stored_intact(store, key, existing)
        if existing.sha256 == sha and stored:
            print(f"{key}: already in {store.describe()} with the same sha256 {sha[:12]}; nothing to do")
            return 0
        if existing.sha256 == sha:  # the metadata is right but the object is not: upload it again
            log.warning("%s in %s is damaged (%s); uploading it again", key, store.describe(), stored.why)
            existing = None
    if existing is not None and not args.force:
        what = f"a different file (sha256 {existing.sha256[:12]})" if existing.sha256 else "a file without metadata"
        raise ConfigError(
            f"upload: {key} already holds {what} in {store.describe()}; pass --force to replace it "
            "(runs that recorded the old sha256 will no longer find it), or choose another --name."
        )
    readmes = {f"{args.group}/{README_NAME}": _readme_group(args.group, DEFAULT_GROUPS.get(args.group, f"Weights for {args.group}."))}
    if args.arch:
        readmes[f"{args.group}/{args.arch}/{README_NAME}"] = _readme_arch(args.group, args.arch)
    for relpath, text in readmes.items():
        if not store.exists(relpath):
            store.put_text(relpath, text)
    with progress_bar(size, key, args.progress) as update:
        store.upload_file(path, key, meta, update)
    log.info("uploaded %s (%d bytes, sha256 %s) to %s", key, size, sha, store.describe())
    print(key)
    return 0


@_needs_store
def cmd_list(args: argparse.Namespace) -> int:
    store = _store_from(args)
    cache = Cache(args.cache)
    rows = []
    for key in store.list_keys(args.prefix or ""):
        meta = store.read_meta(key)
        cached = cache.lookup(store.store_id, key) is not None or (store.local_path(key) is not None)
        rows.append({**meta.public_dict(), "config": meta.config, "date": meta.date, "cached": cached,
                     "verified": meta.verified})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"{store.describe()}: no weight files" + (f" under {args.prefix!r}" if args.prefix else ""))
        return 0
    header = ("KEY", "SIZE", "SHA256", "ARCH", "LICENCE", "CACHED")
    table = [header] + [
        (r["key"], _size(r["size"]), r["sha256"][:12] if r["verified"] else "(no meta)", r["architecture"],
         r["licence"], "yes" if r["cached"] else "no")
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    result = pull(args.key, store=_store_from(args), cache=Cache(args.cache), progress=args.progress,
                  verify=args.verify)
    log.info("%s: %s (%s)", args.key, "downloaded" if result.downloaded else "already here", result.origin)
    print(result.path)
    return 0


@_needs_store
def cmd_info(args: argparse.Namespace) -> int:
    store = _store_from(args)
    key = validate_key(args.key)
    try:
        meta = store.read_meta(key)
    except ObjectMissing:
        raise ConfigError(f"info: {store.describe()} has no weight file {key!r}; see `list`.") from None
    hit = Cache(args.cache).lookup(store.store_id, key)
    data = json.loads(meta.to_json())
    data["store"] = store.describe()
    data["cached_at"] = str(hit[0]) if hit else (str(store.local_path(key)) if store.local_path(key) else None)
    if not meta.verified:
        data["warning"] = f"no {key.rsplit('/', 1)[-1]}{META_SUFFIX}: re-upload to record a checksum"
    print(json.dumps(data, indent=2))
    return 0


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m platform.pretrained", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="s3://bucket/prefix or a folder (default: $PLATFORM_PRETRAINED_STORE, "
                        "else $PLATFORM_PRETRAINED_DIR)")
    parser.add_argument("--endpoint", help="S3 endpoint URL, e.g. http://localhost:9000 for MinIO "
                        "(default: $PLATFORM_PRETRAINED_ENDPOINT)")
    parser.add_argument("--region", help="S3 region (default: $PLATFORM_PRETRAINED_REGION or the AWS chain)")
    parser.add_argument("--cache", help="node cache folder (default: $PLATFORM_PRETRAINED_CACHE or "
                        "~/.cache/platform/pretrained)")
    parser.add_argument("--progress", dest="progress", action="store_true", default=None,
                        help="progress bars on transfers (default: when stderr is a terminal)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: debug logs, -vv: also boto3's")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("setup", help="create the bucket (if needed) and the <group>/ README objects")
    p.add_argument("--groups", nargs="+", metavar="G", help=f"groups (default: {' '.join(DEFAULT_GROUPS)})")
    p.add_argument("--arch", nargs="+", metavar="GROUP/ARCH",
                   help=f"architecture folders (default: {' '.join(DEFAULT_ARCHS)})")
    p.add_argument("--force", action="store_true", help="rewrite README objects that exist")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("upload", help="upload a weight file with its .meta.json")
    p.add_argument("file")
    p.add_argument("--group", required=True, help="e.g. layer_2, general, torchvision, timm")
    p.add_argument("--arch", help="architecture folder, e.g. nafnet (omit for third-party mirrors)")
    p.add_argument("--architecture", help="architecture the weights fit, when it differs from --arch")
    p.add_argument("--name", help="file name in the store (default: the file's name)")
    p.add_argument("--source", help="where the file came from (URL, paper, run id)")
    p.add_argument("--licence", "--license", dest="licence", help="licence of the weights, e.g. MIT")
    p.add_argument("--config", help='configuration it fits: JSON (\'{"width": 64}\') or @file.json/@file.yaml')
    p.add_argument("--state-dict-key", help="key holding the weights in the checkpoint (NAFNet: params)")
    p.add_argument("--notes", help="free text")
    p.add_argument("--force", action="store_true", help="replace a different file under the same key")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("list", help="list weight files with size, sha256, architecture, licence")
    p.add_argument("prefix", nargs="?", help="only keys under this prefix, e.g. layer_2/")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("pull", help="download a weight file into the node cache and print its path")
    p.add_argument("key")
    p.add_argument("--verify", action="store_true", help="re-hash a file already on disk")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("info", help="print a weight file's metadata and cache location")
    p.add_argument("key")
    p.set_defaults(func=cmd_info)
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    install_log_scrubber()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("platform").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if args.verbose >= 2:
        logging.getLogger().setLevel(logging.DEBUG)
    if args.progress is None:  # bars on terminals, not in log files
        args.progress = sys.stderr.isatty()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
