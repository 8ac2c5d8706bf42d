"""Resumable feature extraction into ``.npy`` shards, and reading them back.

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
same images and extractor skips the finished shards (checked by size and SHA-256).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from .._utils import progress
from .sources import NpyShardSource, _check_positive_int

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
# Arrays of ExtractedFeatures written per shard, and the suffix of their files.
KINDS = {"features": "", "colors": "_colors", "positions": "_positions"}
_IDENTITY_FIELDS = ("n_images", "shard_size", "image_list_hash", "extractor", "dtype")


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


# ---------------------------------------------------------------------- identity
def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _hash_images(images, image_ids) -> str:
    """SHA-256 of the image list: ids or paths when given, pixel data otherwise."""
    sha = hashlib.sha256()
    if image_ids is not None:
        if len(image_ids) != len(images):
            raise ValueError(f"image_ids has {len(image_ids)} entries for {len(images)} images.")
        items = (f"id:{i}".encode() for i in image_ids)
    else:
        items = (_image_bytes(images[i]) for i in range(len(images)))
    for item in items:
        sha.update(len(item).to_bytes(8, "little"))  # length prefix: no ambiguous joins
        sha.update(item)
    return sha.hexdigest()


def _image_bytes(image) -> bytes:
    if isinstance(image, (str, os.PathLike)):
        return f"path:{os.fspath(image)}".encode()
    array = np.ascontiguousarray(_to_numpy(image))
    return f"{array.shape}{array.dtype.str}".encode() + array.tobytes()


def _jsonable(value):
    """A JSON-ready copy of extractor parameters (stable across runs: no memory addresses)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "get_params"):
        return {"class": type(value).__qualname__,
                "params": _jsonable(value.get_params(deep=False))}
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _describe_extractor(extractor) -> dict:
    params = None
    if hasattr(extractor, "get_params"):
        try:
            params = extractor.get_params(deep=False)
        except TypeError:  # a get_params without the sklearn signature
            params = extractor.get_params()
    kind = type(extractor)
    return {"class": f"{kind.__module__}.{kind.__qualname__}", "params": _jsonable(params)}


# ---------------------------------------------------------------------- extraction
def _subset(images, start: int, stop: int):
    if isinstance(images, (list, tuple, np.ndarray)) or hasattr(images, "detach"):
        return images[start:stop]
    return [images[i] for i in range(start, stop)]


def _write_shard(directory: Path, index: int, start: int, stop: int, result,
                 manifest: ShardManifest) -> ShardInfo:
    features = _to_numpy(result.features)
    if features.ndim != 4 or features.shape[0] != stop - start:
        raise ValueError(f"extractor.extract returned features of shape {features.shape} for "
                         f"{stop - start} images; expected (n_images, h, w, d).")
    n_img, h, w, d = features.shape
    if manifest.n_features is None:
        manifest.n_features = int(d)
    elif d != manifest.n_features:
        raise ValueError(f"shard {index} has {d} features, earlier shards have "
                         f"{manifest.n_features}; the extractor must keep its output size.")
    arrays = {"features": features.reshape(-1, d).astype(manifest.dtype, copy=False)}
    for kind in ("colors", "positions"):
        side = getattr(result, kind, None)
        if side is not None:
            side = _to_numpy(side)
            arrays[kind] = np.asarray(side.reshape(n_img * h * w, -1), dtype=np.float32)
    files, nbytes, sha = {}, {}, {}
    for kind, array in arrays.items():
        name = f"shard_{index:05d}{KINDS[kind]}.npy"
        writer = _atomic_write(directory / name, lambda fh, a=array: np.save(fh, a))
        files[kind], nbytes[kind], sha[kind] = name, writer.nbytes, writer.sha.hexdigest()
    sizes = getattr(result, "image_sizes", None)
    return ShardInfo(index=index, image_start=start, image_stop=stop, n_rows=n_img * h * w,
                     grid=[int(h), int(w)],
                     image_sizes=_jsonable(_to_numpy(sizes).tolist()) if sizes is not None
                     else [],
                     files=files, nbytes=nbytes, sha256=sha)


def _remove_outputs(manifest: ShardManifest) -> None:
    for info in manifest.shards:
        for name in info.files.values():
            (manifest.directory / name).unlink(missing_ok=True)
    (manifest.directory / MANIFEST_NAME).unlink(missing_ok=True)


def extract_to_shards(extractor, images, out_dir, *, shard_size: int = 64,
                      resume: bool = True, overwrite: bool = False, image_ids=None,
                      dtype: str = "float32", verify: str = "checksum",
                      verbose: bool = False) -> ShardManifest:
    """Run ``extractor`` over ``images`` and write the features as ``.npy`` shards.

    Images are processed ``shard_size`` at a time; each group's features are flattened to
    (n_tokens, d) and written as one shard (plus colour and position side files), then the
    manifest is updated. An interrupted run continues where it stopped when called again.

    Parameters
    ----------
    extractor : object with ``extract(images) -> ExtractedFeatures``
        Returns ``features`` (n_images, h, w, d), and optionally ``colors`` (n_images, h, w,
        3), ``positions`` (n_images, h, w, 2) and ``image_sizes``. Its ``get_params()``, when
        present, is recorded to detect a changed configuration on resume.
    images : sequence of length n_images
        Whatever ``extractor.extract`` takes (arrays, paths, ...), indexable.
    out_dir : path
        Output directory (created if needed).
    shard_size : int, default=64
        Images per shard.
    resume : bool, default=True
        Skip shards already finished by an earlier run of the same extraction. With False, a
        directory that already holds this extraction is an error (use ``overwrite``).
    overwrite : bool, default=False
        Delete earlier shards and manifest in ``out_dir`` and start over.
    image_ids : sequence of str, optional
        Identifiers of the images (e.g. file names) used to recognise the image list on
        resume. By default paths are used as given and arrays are hashed by content.
    dtype : {"float32", "float16"}, default="float32"
        Storage dtype of the features (float16 halves the disk; rows are read as float32).
    verify : {"checksum", "size"}, default="checksum"
        How finished shards are checked before being skipped: SHA-256 of the files (reads
        them), or only their sizes (fast for very large outputs).
    verbose : bool, default=False
        Show a progress bar.

    Returns
    -------
    ShardManifest
        The finished manifest; :func:`load_shards` reads the features back.

    Raises
    ------
    ValueError
        When ``out_dir`` holds shards of a different extraction (other images, extractor
        parameters, shard size or dtype) and ``overwrite`` is False.
    """
    shard_size = _check_positive_int(shard_size, "shard_size")
    if verify not in ("checksum", "size"):
        raise ValueError(f"verify must be 'checksum' or 'size', got {verify!r}.")
    if np.dtype(dtype) not in (np.float32, np.float16):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}.")
    if not hasattr(extractor, "extract"):
        raise TypeError(f"extractor must have an extract(images) method; got "
                        f"{type(extractor).__name__}.")
    if len(images) == 0:
        raise ValueError("images is empty; there is nothing to extract.")
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    identity = json.loads(json.dumps({
        "n_images": len(images), "shard_size": shard_size,
        "image_list_hash": _hash_images(images, image_ids),
        "extractor": _describe_extractor(extractor), "dtype": np.dtype(dtype).name}))

    manifest = None
    if (directory / MANIFEST_NAME).exists():
        manifest = ShardManifest.load(directory)
        if overwrite:
            _remove_outputs(manifest)
            manifest = None
    if manifest is not None:
        changed = [k for k in _IDENTITY_FIELDS if getattr(manifest, k) != identity[k]]
        if changed:
            raise ValueError(
                f"{directory} holds shards of a different extraction ({', '.join(changed)} "
                "changed); pass overwrite=True to replace them, or choose another out_dir."
            )
        if not resume:
            raise ValueError(f"{directory} already holds this extraction; pass resume=True "
                             "to continue it or overwrite=True to recompute it.")
        intact = [s for s in manifest.shards if _shard_is_intact(directory, s, verify)]
        if len(intact) != len(manifest.shards):
            redo = sorted({s.index for s in manifest.shards} - {s.index for s in intact})
            warnings.warn(f"shards {redo} in {directory} are missing or damaged and will be "
                          "extracted again.", RuntimeWarning, stacklevel=2)
            manifest.shards = intact
    else:
        manifest = ShardManifest(directory=directory, **identity)
    for leftover in directory.glob("*.tmp"):  # a write cut short by the interruption
        leftover.unlink()

    done = {s.index for s in manifest.shards}
    for index in progress(range(manifest.n_shards), verbose=verbose, desc="extracting shards"):
        if index in done:
            continue
        start, stop = index * shard_size, min((index + 1) * shard_size, len(images))
        result = extractor.extract(_subset(images, start, stop))
        info = _write_shard(directory, index, start, stop, result, manifest)
        manifest.shards = sorted([*manifest.shards, info], key=lambda s: s.index)
        manifest.save()  # after the shard's files: a listed shard is always a whole shard
    manifest.complete = True
    manifest.save()
    return manifest


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
