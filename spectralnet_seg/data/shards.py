"""The shard directory format written by
[`extract_to_shards`][spectralnet_seg.data.extract_to_shards]:
its manifest and integrity checks ([`load_shards`][spectralnet_seg.data.load_shards] reads the
shards back as a [`NpyShardSource`][spectralnet_seg.data.NpyShardSource]).

Layout of an output directory::

    out_dir/
        manifest.json                 # what was extracted, from what, and which shards are done
        shard_00000.npy               # features of images [0, shard_size), (n_tokens, d)
        shard_00000_colors.npy        # mean colour of each token, (n_tokens, 3)
        shard_00000_positions.npy     # token position, (n_tokens, 2)
        shard_00001.npy ...

Every file is written to a temporary name and moved into place with ``os.replace``, and
the manifest is rewritten the same way after each shard, so an interruption at any moment
leaves finished shards listed and intact, and at most one shard to redo. A restart with the
same images and extractor skips the finished shards (checked by size and SHA-256); see
[`spectralnet_seg.data.extract`][spectralnet_seg.data.extract].
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from .._utils import is_integer

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
# Arrays of ExtractedFeatures written per shard, and the suffix of their files.
KINDS = {"features": "", "colors": "_colors", "positions": "_positions"}


@dataclasses.dataclass
class ShardInfo:
    """One finished shard: which images, how many rows, its files and their checksums."""

    index: int
    image_start: int
    image_stop: int
    n_rows: int
    grid: list[int]  # tokens per image, [h, w]
    image_sizes: list  # per image, as the extractor reported them
    files: dict[str, str]  # kind -> file name in the directory
    nbytes: dict[str, int]
    sha256: dict[str, str]


@dataclasses.dataclass
class ShardManifest:
    """Contents of ``manifest.json``: the extraction's identity and its finished shards.

    Attributes
    ----------
    directory : Path
        Where the shards are.
    n_images, shard_size : int
        Images in the list, and per shard (the last shard may hold fewer).
    image_list_hash : str
        SHA-256 of the image list (paths, ids or pixel data) the shards were computed from.
    extractor : dict
        The extractor's class and ``get_params()``.
    dtype : str
        Storage dtype of the features.
    n_features : int or None
        Feature dimension (None before the first shard).
    shards : list of ShardInfo
        Finished shards, in order.
    complete : bool
        Whether every shard is finished.
    """

    directory: Path
    n_images: int
    shard_size: int
    image_list_hash: str
    extractor: dict
    dtype: str = "float32"
    n_features: int | None = None
    shards: list[ShardInfo] = dataclasses.field(default_factory=list)
    complete: bool = False
    format_version: int = FORMAT_VERSION

    @property
    def n_shards(self) -> int:
        """Number of shards the whole extraction has (finished or not)."""
        return math.ceil(self.n_images / self.shard_size)

    @property
    def n_rows(self) -> int:
        """Rows (tokens) in the finished shards."""
        return sum(s.n_rows for s in self.shards)

    def files(self, kind: str = "features", *, require_complete: bool = True) -> list[Path]:
        """Paths of the finished shards' ``kind`` files ("features", "colors", "positions")."""
        if require_complete and not self.complete:
            raise ValueError(
                f"the extraction in {self.directory} is unfinished ({len(self.shards)} of "
                f"{self.n_shards} shards); rerun extract_to_shards with resume=True to finish "
                "it, or pass allow_incomplete=True to load_shards to use what is there."
            )
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not one of {list(KINDS)}.")
        missing = [s.index for s in self.shards if kind not in s.files]
        if missing:
            raise ValueError(f"shards {missing} have no {kind!r} file; the extractor did not "
                             f"return {kind}.")
        return [self.directory / s.files[kind] for s in self.shards]

    def image_row_ranges(self) -> np.ndarray:
        """Rows ``[start, stop)`` of each extracted image, shape (n_images_done, 2), int64."""
        ranges, row = [], 0
        for s in self.shards:
            per_image = s.grid[0] * s.grid[1]
            for _ in range(s.image_start, s.image_stop):
                ranges.append((row, row + per_image))
                row += per_image
        return np.asarray(ranges, dtype=np.int64).reshape(-1, 2)

    # ---------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("directory")
        return out

    @classmethod
    def load(cls, directory) -> ShardManifest:
        """Read ``directory/manifest.json``."""
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {MANIFEST_NAME} in {directory}; it is not an output "
                                    "directory of extract_to_shards.")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidManifestError(f"{path} is not a valid manifest (malformed JSON: "
                                       f"{exc}); delete the directory's outputs and extract "
                                       "again.") from None
        if not isinstance(data, dict):
            raise InvalidManifestError(f"{path} is not a valid manifest (a JSON object is "
                                       "expected).")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has format_version {data.get('format_version')}, this "
                             f"version of spectralnet_seg reads {FORMAT_VERSION}.")
        try:
            data["shards"] = [ShardInfo(**s) for s in data["shards"]]
            manifest = cls(directory=directory, **data)
        except (KeyError, TypeError) as exc:  # missing, unknown or mistyped fields
            raise InvalidManifestError(f"{path} is not a valid manifest ({exc}).") from None
        check_manifest(manifest, path)
        return manifest

    def save(self) -> None:
        """Write ``manifest.json`` atomically (temporary file + ``os.replace``)."""
        text = json.dumps(self.to_dict(), indent=1)
        _atomic_write(self.directory / MANIFEST_NAME, lambda fh: fh.write(text.encode()))


# ---------------------------------------------------------------------- validation
class InvalidManifestError(ValueError):
    """A manifest that is malformed or inconsistent (not an unsafe one: file names that
    lead outside the directory stay a plain ValueError, refused even with overwrite)."""


def _check_file_name(name, manifest_path: Path) -> None:
    """A shard file must be a plain name inside the manifest's directory.

    The manifest drives deletions (``overwrite=True``): a ``../x`` or absolute name would
    delete or read a file outside the directory.
    """
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name \
            or "/" in name or "\\" in name or Path(name).is_absolute():
        raise ValueError(f"{manifest_path} lists the shard file {name!r}, which is not a plain "
                         f"file name inside {manifest_path.parent}; refusing to read or delete "
                         "it. Shard files must live in the manifest's directory.")
    directory = manifest_path.parent.resolve()
    resolved = (directory / name).resolve()  # a symbolic link may still lead elsewhere
    if not resolved.is_relative_to(directory):
        raise ValueError(f"{manifest_path} lists the shard file {name!r}, which resolves to "
                         f"{resolved}, outside {directory}; refusing to read or delete it.")


def check_manifest(manifest: ShardManifest, path: Path) -> None:
    """Check that a manifest is self-consistent: file names, image ranges, row counts.

    Raises
    ------
    ValueError
        Naming ``path`` and the first inconsistency.
    """
    def fail(problem: str):
        raise InvalidManifestError(f"{path} is not a valid manifest: {problem}. Rerun "
                                   "extract_to_shards with overwrite=True (or delete the "
                                   "directory's outputs).")

    if not (is_integer(manifest.n_images) and manifest.n_images >= 1
            and is_integer(manifest.shard_size) and manifest.shard_size >= 1):
        fail(f"n_images={manifest.n_images!r} and shard_size={manifest.shard_size!r} must be "
             "positive integers")
    if manifest.n_features is not None and not (is_integer(manifest.n_features)
                                                and manifest.n_features >= 1):
        fail(f"n_features={manifest.n_features!r} must be a positive integer")
    indices = [info.index for info in manifest.shards]
    if indices != sorted(set(indices)):
        fail(f"shard indices {indices} are not increasing")
    if manifest.complete and indices != list(range(manifest.n_shards)):
        fail(f"it is marked complete but lists shards {indices} of {manifest.n_shards}")
    for info in manifest.shards:
        if not isinstance(info.files, dict) or "features" not in info.files \
                or not set(info.files) <= set(KINDS):
            fail(f"shard {info.index} lists files {info.files!r}; expected a 'features' file "
                 f"and optional {sorted(set(KINDS) - {'features'})}")
        for name in info.files.values():
            _check_file_name(name, path)
        for field in ("nbytes", "sha256"):  # resume and verify look them up per file
            entries = getattr(info, field)
            if not isinstance(entries, dict) or set(entries) != set(info.files):
                fail(f"shard {info.index} has {field} {entries!r}; expected one entry per file "
                     f"{sorted(info.files)}")
        if not is_integer(info.index) or not 0 <= info.index < manifest.n_shards:
            fail(f"shard index {info.index!r} is outside [0, {manifest.n_shards})")
        start = info.index * manifest.shard_size
        stop = min(start + manifest.shard_size, manifest.n_images)
        if (info.image_start, info.image_stop) != (start, stop):
            fail(f"shard {info.index} covers images [{info.image_start}, {info.image_stop}), "
                 f"shard_size={manifest.shard_size} puts it at [{start}, {stop})")
        grid = info.grid
        if not (isinstance(grid, list) and len(grid) == 2 and all(is_integer(g) and g >= 1
                                                                   for g in grid)):
            fail(f"shard {info.index} has grid {grid!r}; expected [h, w]")
        if info.n_rows != (stop - start) * grid[0] * grid[1]:
            fail(f"shard {info.index} has n_rows={info.n_rows!r}, but its {stop - start} "
                 f"images of {grid[0]} x {grid[1]} tokens make {(stop - start) * grid[0] * grid[1]}")


def _check_shard_shapes(manifest: ShardManifest, kind: str, files: list[Path]) -> None:
    """The rows and columns of each shard file agree with the manifest (headers only)."""
    from ._io import read_npy_header

    width = {"features": manifest.n_features, "colors": 3, "positions": 2}[kind]
    for info, file in zip(manifest.shards, files, strict=True):
        shape = read_npy_header(file)[0]  # also refuses a truncated file
        if len(shape) != 2 or shape[0] != info.n_rows or (width and shape[1] != width):
            raise ValueError(
                f"shard file {file} holds an array of shape {shape}, but the manifest lists "
                f"{info.n_rows} rows of {width} values (images [{info.image_start}, "
                f"{info.image_stop})); the file was replaced or damaged. Rerun "
                "extract_to_shards (resume=True redoes shards that fail their checksum).")


# ---------------------------------------------------------------------- file writing
class _HashingWriter:
    """File wrapper that hashes and counts what passes through ``write``."""

    def __init__(self, fh):
        self.fh, self.sha, self.nbytes = fh, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.nbytes += len(data)
        return self.fh.write(data)


def _atomic_write(path: Path, write) -> _HashingWriter:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        writer = _HashingWriter(fh)
        write(writer)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return writer


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**24), b""):
            sha.update(block)
    return sha.hexdigest()


def _shard_is_intact(directory: Path, info: ShardInfo, verify: str) -> bool:
    for kind, name in info.files.items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != info.nbytes[kind]:
            return False
        if verify == "checksum" and _file_sha256(path) != info.sha256[kind]:
            return False
    return True


# Side files an extraction writes next to each feature shard.
_SIDE_SUFFIXES = tuple(suffix for suffix in KINDS.values() if suffix)


def _natural_key(path: Path) -> list:
    """Sort key reading digit runs as numbers: ``part_2`` before ``part_10``."""
    return [int(part) if part.isdigit() else part
            for part in re.split(r"(\d+)", path.name)]


def resolve_shard_files(files) -> list[Path]:
    """The ``.npy`` files of a shard directory (its manifest's when it has one), or ``files``.

    Parameters
    ----------
    files : path or sequence of paths
        A directory (with or without ``manifest.json``; without one, its ``.npy`` files
        but the ``*_colors`` / ``*_positions`` side files, in natural name order), one
        ``.npy`` file, or several.

    Returns
    -------
    list of Path
        Existing files, in row order.
    """
    if isinstance(files, (str, os.PathLike)):
        path = Path(files)
        if not path.exists():
            raise FileNotFoundError(f"no shard directory or file at {path}.")
        if path.is_dir():
            manifest = path / "manifest.json"
            if manifest.exists():
                manifest = ShardManifest.load(path)
                found = manifest.files("features")
                _check_shard_shapes(manifest, "features", found)
                return found
            # Without a manifest: the feature files only (extraction writes colours and
            # positions beside them), in natural order (part_2 before part_10).
            found = sorted((p for p in path.glob("*.npy") if p.is_file()
                            and not p.stem.endswith(_SIDE_SUFFIXES)), key=_natural_key)
            if not found:
                raise FileNotFoundError(f"{path} contains no .npy files (of features).")
            return found
        files = [path]
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("no shard files were given.")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"shard file {p} does not exist.")
    return paths
