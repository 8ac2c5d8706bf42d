"""Resumable feature extraction: images -> an extractor -> ``.npy`` shards + a manifest.

Images are processed ``shard_size`` at a time; each group's token features are flattened to
(n_tokens, d) and written as one shard (with colour and position side files), after which
the manifest lists it. An interrupted run, called again with the same images and
extractor, skips the listed shards (after checking their sizes and SHA-256) and writes the
rest, so the finished directory is byte-identical to an uninterrupted run's. The layout is
described in [`spectralnet_seg.data.shards`][spectralnet_seg.data.shards].
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np
import PIL.Image
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_params

from .._utils import as_numpy, progress, stable_description, user_stacklevel
from ..features._base import shared_input_size
from ..images import _without_exif_warning, load_image
from .shards import (
    KINDS,
    MANIFEST_NAME,
    InvalidManifestError,
    ShardInfo,
    ShardManifest,
    _atomic_write,
    _shard_is_intact,
)

# Manifest fields that must match for a run to continue an earlier one.
_IDENTITY_FIELDS = ("n_images", "shard_size", "image_list_hash", "extractor", "dtype")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def list_image_files(paths, *, recursive: bool = False) -> list[Path]:
    """Image files named by ``paths``: files as given, folders expanded in name order.

    Parameters
    ----------
    paths : path or sequence of paths
        Image files and/or folders of images.
    recursive : bool, default=False
        Also look into sub-folders.

    Returns
    -------
    list of Path
        Files in the order given (each folder's images sorted by path).

    Raises
    ------
    FileNotFoundError
        A path that does not exist, or no image at all.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("b.png", "a.jpg", "notes.txt"):
    ...     _ = (folder / name).write_bytes(b"")
    >>> [p.name for p in list_image_files(folder)]
    ['a.jpg', 'b.png']
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            files.extend(sorted(p for p in found
                                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no image file or folder at {path}.")
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in "
                                f"{[str(p) for p in map(Path, paths)]}.")
    return files


# ---------------------------------------------------------------------- identity
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
        # The path alone would let a file replaced under the same name resume with the old
        # file's features; its size and modification time tell the versions apart.
        try:
            stat = os.stat(image)
            version = f":{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:  # a missing file is reported when it is read
            version = ""
        return f"path:{os.fspath(image)}{version}".encode()
    if isinstance(image, PIL.Image.Image):
        # A PIL image's own array can hide what the extractor sees: a "P" image's palette
        # indices without the palette, an image without its transparency key.
        with _without_exif_warning():
            image = load_image(image)
    array = np.ascontiguousarray(as_numpy(image))
    return f"{array.shape}{array.dtype.str}".encode() + array.tobytes()


def _describe_extractor(extractor) -> dict:
    params = None
    if hasattr(extractor, "get_params"):
        try:
            params = extractor.get_params(deep=False)
        except TypeError:  # a get_params without the sklearn signature
            params = extractor.get_params()
    kind = type(extractor)
    return {"class": f"{kind.__module__}.{kind.__qualname__}",
            "params": stable_description(params)}


# ---------------------------------------------------------------------- extraction
def _subset(images, start: int, stop: int):
    if isinstance(images, (list, tuple, np.ndarray)) or hasattr(images, "detach"):
        return images[start:stop]
    return [images[i] for i in range(start, stop)]


def _write_shard(directory: Path, index: int, start: int, stop: int, result,
                 manifest: ShardManifest) -> ShardInfo:
    features = as_numpy(result.features)
    if features.ndim != 4 or features.shape[0] != stop - start:
        raise ValueError(f"extractor.extract returned features of shape {features.shape} for "
                         f"{stop - start} images; expected (n_images, h, w, d).")
    n_img, h, w, d = features.shape
    if 0 in (h, w, d):  # a manifest with an empty grid is refused when read back
        raise ValueError(f"extractor.extract returned features of shape {features.shape}: an "
                         "empty token grid or no feature dimension.")
    if manifest.n_features is None:
        manifest.n_features = int(d)
    elif d != manifest.n_features:
        raise ValueError(f"shard {index} has {d} features, earlier shards have "
                         f"{manifest.n_features}; the extractor must keep its output size.")
    with np.errstate(over="ignore"):  # overflow is reported below, with the fix
        stored = features.reshape(-1, d).astype(manifest.dtype, copy=False)
    if stored.dtype != features.dtype and not np.isfinite(stored).all():
        peak = float(np.nanmax(np.abs(features)))
        raise ValueError(f"shard {index}: features up to {peak:.3g} in magnitude do not fit "
                         f"{manifest.dtype} storage (largest {np.finfo(stored.dtype).max:.3g}) "
                         "or hold NaN/inf; extract with dtype='float32'.")
    arrays = {"features": stored}
    for kind, width in (("colors", 3), ("positions", 2)):
        side = getattr(result, kind, None)
        if side is not None:
            side = as_numpy(side)
            if side.shape != (n_img, h, w, width):  # e.g. channels-first, or no channel axis
                raise ValueError(f"extractor.extract returned {kind} of shape {side.shape}; "
                                 f"expected {(n_img, h, w, width)} like its features.")
            arrays[kind] = np.asarray(side.reshape(n_img * h * w, width), dtype=np.float32)
    files, nbytes, sha = {}, {}, {}
    for kind, array in arrays.items():
        name = f"shard_{index:05d}{KINDS[kind]}.npy"
        writer = _atomic_write(directory / name, lambda fh, a=array: np.save(fh, a))
        files[kind], nbytes[kind], sha[kind] = name, writer.nbytes, writer.sha.hexdigest()
    sizes = getattr(result, "image_sizes", None)
    return ShardInfo(index=index, image_start=start, image_stop=stop, n_rows=n_img * h * w,
                     grid=[int(h), int(w)],
                     image_sizes=([] if sizes is None
                                  else stable_description(as_numpy(sizes).tolist())),
                     files=files, nbytes=nbytes, sha256=sha)


def _remove_outputs(manifest: ShardManifest) -> None:
    for info in manifest.shards:
        for name in info.files.values():
            (manifest.directory / name).unlink(missing_ok=True)
    (manifest.directory / MANIFEST_NAME).unlink(missing_ok=True)


# The names extract_to_shards writes: what an overwrite may delete without a manifest.
_OWN_FILE = re.compile(rf"shard_\d{{5}}(?:{'|'.join(map(re.escape, KINDS.values()))})\.npy")


def _remove_own_outputs(directory: Path) -> None:
    for path in directory.iterdir():
        if _OWN_FILE.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            path.unlink()
    (directory / MANIFEST_NAME).unlink(missing_ok=True)


@validate_params(
    {
        "extractor": [HasMethods(["extract"])],
        "images": ["array-like"],
        "out_dir": [str, os.PathLike],
        "shard_size": [Interval(Integral, 1, None, closed="left")],
        "resume": ["boolean"],
        "overwrite": ["boolean"],
        "image_ids": ["array-like", None],
        "dtype": [StrOptions({"float32", "float16"}), type, np.dtype],
        "verify": [StrOptions({"checksum", "size"})],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def extract_to_shards(extractor, images, out_dir, *, shard_size: int = 64,
                      resume: bool = True, overwrite: bool = False, image_ids=None,
                      dtype: str = "float32", verify: str = "checksum",
                      verbose: bool = False) -> ShardManifest:
    """Run ``extractor`` over ``images`` and write the features as ``.npy`` shards.

    Images are processed ``shard_size`` at a time; each group's features are flattened to
    (n_tokens, d) and written as one shard (plus colour and position side files), then the
    manifest is updated. An interrupted run continues where it stopped when called again.
    An extractor whose ``image_size`` is None (each call at its first image's size) gets
    ``size=`` the first image's size in every call, so all shards share one token grid and
    an image's features do not depend on the other images of its shard.

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
        resume. By default paths are used as given, with each file's size and modification
        time (a file replaced under the same name is another image), and arrays are hashed
        by content.
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
        The finished manifest; [`load_shards`][load_shards] reads the features back.

    Raises
    ------
    ValueError
        When ``out_dir`` holds shards of a different extraction (other images, extractor
        parameters, shard size or dtype) and ``overwrite`` is False.
    """
    shard_size = int(shard_size)
    if np.dtype(dtype) not in (np.float32, np.float16):  # np.float16 or a dtype object
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}.")
    if len(images) == 0:
        raise ValueError("images is empty; there is nothing to extract.")
    if isinstance(images[0], tuple):  # a SegmentationDataset's (image, mask) items
        raise ValueError("images holds tuples (a dataset of (image, mask) pairs?); pass the "
                         "images alone, e.g. [image for image, _ in dataset].")
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    identity = json.loads(json.dumps({
        "n_images": len(images), "shard_size": shard_size,
        "image_list_hash": _hash_images(images, image_ids),
        "extractor": _describe_extractor(extractor), "dtype": np.dtype(dtype).name}))

    manifest = None
    if (directory / MANIFEST_NAME).exists():
        try:
            manifest = ShardManifest.load(directory)
        except InvalidManifestError:
            if not overwrite:
                raise
            _remove_own_outputs(directory)  # the manifest cannot say which files are its own
        if overwrite and manifest is not None:
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
                          "extracted again.", RuntimeWarning, stacklevel=user_stacklevel())
            manifest.shards = intact
    else:
        manifest = ShardManifest(directory=directory, **identity)
    for leftover in directory.glob("*.tmp"):  # a write cut short by the interruption
        if _OWN_FILE.fullmatch(leftover.name[:-4]) or leftover.name == f"{MANIFEST_NAME}.tmp":
            leftover.unlink()  # only this extraction's own files: a user's *.tmp stays

    done = {s.index for s in manifest.shards}
    # One input size for every shard (a batch array has one already): an image's features
    # must not depend on which images share its shard.
    size = (None if isinstance(images, np.ndarray) or hasattr(images, "detach")
            else shared_input_size(extractor, images))
    for index in progress(range(manifest.n_shards), verbose=verbose, desc="extracting shards"):
        if index in done:
            continue
        start, stop = index * shard_size, min((index + 1) * shard_size, len(images))
        batch = _subset(images, start, stop)
        result = extractor.extract(batch) if size is None else extractor.extract(batch, size=size)
        info = _write_shard(directory, index, start, stop, result, manifest)
        manifest.shards = sorted([*manifest.shards, info], key=lambda s: s.index)
        manifest.save()  # after the shard's files: a listed shard is always a whole shard
    manifest.complete = True
    manifest.save()
    return manifest
