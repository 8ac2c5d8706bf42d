"""Checks the command line runs before any work: outputs, inputs, device, extractor.

Each check raises [`CommandError`][CommandError] (a ``ValueError``) with a message a user can act
on;
[`spectralnet_seg.cli.main`][spectralnet_seg.cli.main] prints it as one line with exit status 2.
Running them
before the fit means a typo in ``--out`` or an unusable device never costs a training run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["CommandError", "check_crf", "check_device", "check_extractor", "check_image_files",
           "check_output_folder", "checked_image_files", "output_names", "refuse_existing"]


class CommandError(ValueError):
    """A problem with the command's arguments, found before the work starts."""


def check_output_folder(out: str | os.PathLike, option: str = "--out") -> Path:
    """Create the output folder (or accept an existing one) and check it is writable.

    Raises
    ------
    CommandError
        If ``out`` names an existing file, or cannot be created or written.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"{option} {folder} is an existing file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CommandError(f"cannot create {option} {folder}: {err.strerror or err}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(f"{option} {folder} is not writable")
    return folder


def refuse_existing(paths: Sequence[Path], *, flag: str = "--overwrite") -> None:
    """Refuse to write over files that exist (results of an earlier run) unless allowed."""
    existing = [p for p in paths if p.exists()]
    if existing:
        shown = ", ".join(str(p) for p in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise CommandError(f"{len(existing)} output file(s) already exist ({shown}{more}); "
                           f"pass {flag} to replace them, or choose another --out")


def output_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """One distinct output name per input file: its stem, made unique where stems repeat.

    ``a/x.png`` and ``b/x.png`` become ``x`` and ``x-2``: the first keeps its stem, later
    ones take the smallest free suffix. Names are compared case-insensitively, since
    ``X.png`` and ``x.png`` are one file on some file systems.

    Examples
    --------
    >>> output_names(["a/x.png", "b/x.png", "c/X.jpg", "x-2.png"])
    ['x', 'x-3', 'X-4', 'x-2']
    """
    stems = [Path(p).stem for p in paths]
    used = {s.casefold() for s in stems}
    seen: set[str] = set()
    names = []
    for stem in stems:
        name = stem
        if stem.casefold() in seen:  # a repeated stem: find a free suffix
            suffix = 2
            while f"{stem}-{suffix}".casefold() in used:
                suffix += 1
            name = f"{stem}-{suffix}"
            used.add(name.casefold())
        seen.add(stem.casefold())
        names.append(name)
    return names


def checked_image_files(paths: Sequence[str], *, recursive: bool = False) -> list[str]:
    """The image files named by ``paths`` (folders expanded), each checked readable."""
    from .data import list_image_files

    files = [str(path) for path in list_image_files(paths, recursive=recursive)]
    check_image_files(files)
    return files


def check_image_files(paths: Sequence[str]) -> None:
    """Every path is an existing file that an image reader recognises (header only)."""
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        try:
            with Image.open(path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise CommandError(f"{path} is not a readable image ({err})") from None


def check_device(device: str | None) -> None:
    """The device exists on this machine (``None``: the estimator's own choice)."""
    if device is None:
        return
    from ._utils import resolve_device

    resolve_device(device)  # raises ValueError for unknown or unavailable devices


def check_crf(crf: bool) -> None:
    """``--crf`` has its optional package (the Python message would say ``crf=None``)."""
    if not crf:
        return
    from .postprocessing import _import_densecrf

    try:
        _import_densecrf()
    except ImportError:
        raise CommandError(
            "--crf needs the optional dense-CRF package, which is not installed: install it "
            "with `pip install 'spectralnet-seg[crf]'` (pydensecrf2), or run without --crf"
        ) from None


def check_extractor(extractor, *, name: str, checkpoint_path=None) -> None:
    """Run the extractor once on a small blank image, so that weights load now.

    A timm backbone is built on first use: without this, missing network access or an
    unreadable ``--checkpoint-path`` would surface only after the images were read.
    """
    probe = np.full((64, 64, 3), 127, dtype=np.uint8)
    try:
        extractor.extract([probe])
    except Exception as err:  # report any failure of the backbone as a usage error
        if checkpoint_path is not None and not isinstance(err, FileNotFoundError):
            # torch's own message may advise weights_only=False; never pass that on.
            raise CommandError(
                f"--checkpoint-path {checkpoint_path} could not be loaded as timm weights "
                f"({type(err).__name__}); give a state dict saved by "
                "torch.save(model.state_dict(), path) or a .safetensors file") from None
        message = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, OSError) and name.startswith("timm:"):
            message += " On the command line: --checkpoint-path FILE or --random-init."
        raise CommandError(f"extractor {name!r} cannot run: {message}") from None
