"""The shard directory format written by :func:`~spectralnet_seg.data.extract_to_shards`:
its manifest, integrity checks, and reading the shards back (:func:`load_shards`).

Layout of an output directory::

    out_dir/
        manifest.json                 # what was extracted, from what, and which shards are done
        shard_00000.npy               # features of images [0, shard_size), (n_tokens, d)
        shard_00000_colors.npy        # mean colour of each token, (n_tokens, 3)
        shard_00000_positions.npy     # token position, (n_tokens, 2)
        shard_00001.npy ...

Every file is written to a temporary name and moved into place with :func:`os.replace`, and
the manifest is rewritten the same way after each shard, so an interruption at any moment
leaves finished shards listed and intact, and at most one shard to redo. A restart with the
same images and extractor skips the finished shards (checked by size and SHA-256); see
:mod:`spectralnet_seg.data.extract`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from .sources import NpyShardSource

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
        data = json.loads(path.read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has format_version {data.get('format_version')}, this "
                             f"version of spectralnet_seg reads {FORMAT_VERSION}.")
        data["shards"] = [ShardInfo(**s) for s in data["shards"]]
        return cls(directory=directory, **data)

    def save(self) -> None:
        """Write ``manifest.json`` atomically (temporary file + :func:`os.replace`)."""
        text = json.dumps(self.to_dict(), indent=1)
        _atomic_write(self.directory / MANIFEST_NAME, lambda fh: fh.write(text.encode()))


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


def load_shards(out_dir, *, kind: str = "features", allow_incomplete: bool = False,
                verify: bool = False, **source_kwargs) -> NpyShardSource:
    """The shards written by :func:`extract_to_shards` as one memory-mapped source.

    Parameters
    ----------
    out_dir : path
        Directory holding ``manifest.json``.
    kind : {"features", "colors", "positions"}, default="features"
        Which arrays to read; rows line up across kinds.
    allow_incomplete : bool, default=False
        Use the finished shards of an unfinished extraction instead of raising.
    verify : bool, default=False
        Check every file's SHA-256 against the manifest first (reads all data once).
    **source_kwargs
        Passed to :class:`NpyShardSource` (``max_open_shards``).

    Returns
    -------
    NpyShardSource
        Rows in image order; ``ShardManifest.load(out_dir).image_row_ranges()`` maps
        images to rows.
    """
    manifest = ShardManifest.load(out_dir)
    files = manifest.files(kind, require_complete=not allow_incomplete)
    if not files:
        raise ValueError(f"{out_dir} has no finished shard yet.")
    if verify:
        for info in manifest.shards:
            if not _shard_is_intact(manifest.directory, info, "checksum"):
                raise ValueError(f"shard {info.index} in {out_dir} does not match its "
                                 "checksum; rerun extract_to_shards (resume=True) to redo it.")
    return NpyShardSource(files, **source_kwargs)
