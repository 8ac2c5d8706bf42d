"""Checkpoint files of the neural estimators: naming, fingerprinting, atomic writes, resuming.

Guarantees (see ``docs/reliability.md``):

* a checkpoint is resumed only by a fit with the same estimator, settings, integer
  ``random_state`` and the same data, every byte of it ([`data_checksum`][data_checksum]);
* a write goes to a temporary file that is fsync'ed and then renamed over the latest
  checkpoint, which is first kept as ``<name>.pt.prev``: a kill at any moment leaves a
  complete latest or previous checkpoint, never a truncated one under the real name;
* a checkpoint that cannot be read back (truncated, garbage, another network) falls back to
  the previous one with a [`CheckpointWarning`][CheckpointWarning], or raises one
  [`CheckpointError`][CheckpointError]
  naming the file; nothing of torch's loader messages (which may advise
  ``weights_only=False``) is passed on;
* the directory is checked before training starts, not at the first save.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import tempfile
import warnings
import zipfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

from .._utils import available_cores, user_stacklevel

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "checkpoint_path",
    "checkpoints_wanted",
    "data_checksum",
    "load_checkpoint",
    "previous_checkpoint",
    "resume_from_checkpoint",
    "save_checkpoint",
]

# Bytes hashed per task: large enough to amortise the thread hand-off, small enough to
# spread a data set over all cores and to bound what is held in memory at once.
_HASH_CHUNK_BYTES = 16 * 2**20


class CheckpointError(OSError):
    """A checkpoint directory or file that cannot be used; the message names the path."""


class CheckpointWarning(UserWarning):
    """Checkpoints were skipped, or a damaged checkpoint was replaced by the previous one."""


# ----------------------------------------------------------------------------- fingerprint
def data_checksum(X) -> str:
    """Fingerprint of a whole data set: its shape, dtype and every byte of its rows.

    A SHA-256 tree hash: row chunks of ~16 MiB are hashed in a thread pool (``hashlib``
    releases the GIL, so this runs on all cores) and their digests are hashed in order.
    Chunk boundaries depend only on the shape, so the result does not depend on the number
    of threads. Lazy sources (memmaps, shard directories) are read one chunk at a time.

    Parameters
    ----------
    X : ndarray or FeatureSource of shape (n_samples, n_features)
        Validated training data.

    Returns
    -------
    str
        ``"<n_samples>x<n_features>:<32 hex digits>"``.
    """
    n_rows, n_features = X.shape
    dtype = np.dtype(X.dtype)
    # FeatureSources return float32 rows whatever their storage dtype.
    itemsize = dtype.itemsize if isinstance(X, np.ndarray) else 4
    step = max(1, _HASH_CHUNK_BYTES // max(1, n_features * itemsize))

    def digest(rows: np.ndarray) -> bytes:
        return hashlib.sha256(np.ascontiguousarray(rows)).digest()

    digests: list[bytes] = []
    workers = min(8, available_cores())
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for start in range(0, n_rows, step):
            pending.append(pool.submit(digest, X[start:start + step]))
            if len(pending) > 2 * workers:  # bound the chunks held in memory
                digests.append(pending.popleft().result())
        digests.extend(future.result() for future in pending)
    total = hashlib.sha256(f"{n_rows}x{n_features}:{dtype.str}:{type(X).__name__}".encode())
    for item in digests:
        total.update(item)
    return f"{n_rows}x{n_features}:{total.hexdigest()[:32]}"


def checkpoint_path(directory: str | os.PathLike, prefix: str, fingerprint: dict) -> Path:
    """File of the checkpoint of one training run, named after its configuration.

    Runs with another configuration or other data get another file, so a directory can be
    shared without one run resuming from another's state.
    """
    key = repr(sorted((str(k), str(v)) for k, v in fingerprint.items()))
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return Path(directory) / f"{prefix}-{digest}.pt"


def previous_checkpoint(path: Path) -> Path:
    """Where the checkpoint before the latest one is kept (not matched by ``*.pt``)."""
    return path.with_name(path.name + ".prev")


# ----------------------------------------------------------------------------- directory
def checkpoints_wanted(checkpoint_dir, random_state) -> bool:
    """Whether this fit writes and resumes checkpoints; checks the directory first.

    Only runs with an integer ``random_state`` use checkpoints: an unseeded run cannot be
    told apart from a later, independent fit, which would otherwise return this run's model
    without training. The directory is created if needed and must accept a file, so that a
    read-only directory fails now and not after the first ``checkpoint_every`` steps.

    Parameters
    ----------
    checkpoint_dir : path or None
        The estimator's ``checkpoint_dir``.
    random_state : int, RandomState instance or None
        The estimator's ``random_state``.

    Returns
    -------
    bool

    Raises
    ------
    CheckpointError
        If ``checkpoint_dir`` is an existing file, cannot be created, or is not writable.
    """
    if checkpoint_dir is None:
        return False
    if not isinstance(random_state, Integral) or isinstance(random_state, bool):
        warnings.warn(
            f"checkpoint_dir={os.fspath(checkpoint_dir)!r} is ignored: checkpoints need an "
            f"integer random_state (got {random_state!r}), otherwise a later fit could not be "
            "told apart from this run and would return its model without training.",
            CheckpointWarning, stacklevel=user_stacklevel())
        return False
    directory = Path(checkpoint_dir)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"checkpoint_dir={str(directory)!r} is an existing file, not a "
                              "directory; pass a directory (it is created if missing).")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=directory)
        os.close(handle)
        os.remove(probe)
    except OSError as exc:
        raise CheckpointError(
            f"checkpoint_dir={str(directory)!r} is not a writable directory "
            f"({exc.strerror or exc}); fix its permissions or choose another directory. "
            "Nothing was trained.") from exc
    return True


# ----------------------------------------------------------------------------- files
def _fsync_directory(directory: Path) -> None:
    """Make the renames in ``directory`` durable (no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` so that a crash at any moment loses at most this write.

    ``torch.save`` to a temporary file in the same directory, ``fsync``, then the current
    checkpoint becomes [`previous_checkpoint`][previous_checkpoint] and the temporary file is
    renamed to
    ``path`` (both renames are atomic).

    Raises
    ------
    CheckpointError
        If the file cannot be written (full disk, quota, permissions); the checkpoints
        already on disk are left as they were.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        if path.exists():
            os.replace(path, previous_checkpoint(path))
        os.replace(tmp, path)
        tmp = None
        _fsync_directory(path.parent)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError
        raise CheckpointError(
            f"could not write the checkpoint {path}: {exc}. The checkpoints already on disk "
            "are unchanged; free disk space or choose another checkpoint_dir.") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path`` (tensors on the CPU), or None when there is none.

    Raises
    ------
    CheckpointError
        If the file exists but is not a readable checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        # torch.load does not check the archive's CRCs: a flipped byte in a weight would be
        # resumed from silently. zipfile does (and reads the whole file once).
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        if damaged is not None:
            raise zipfile.BadZipFile(f"CRC mismatch in {damaged}")
        with warnings.catch_warnings():  # torch's warnings about garbage bytes: reported below
            warnings.simplefilter("ignore")
            # weights_only=True: a checkpoint file can never run code.
            return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:  # a valid file the user cannot read: not "damaged"
        raise CheckpointError(f"the checkpoint {path} cannot be read (permission denied); "
                              "fix its permissions, or use another checkpoint_dir.") from None
    except Exception as exc:  # zip, unpickling, EOF...: all mean "not a usable file"
        raise CheckpointError(f"the checkpoint {path} is truncated or not a checkpoint file "
                              f"({type(exc).__name__}).") from None


def _restore(run, state: dict) -> None:
    """Load ``state`` into ``run`` and check it fits; raises ValueError otherwise."""
    try:
        run.load_state_dict(state)
    except Exception as exc:  # size mismatch, missing keys, wrong types
        # torch's first line only says "Error(s) in loading state_dict": keep the next too.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise ValueError(f"it does not fit this estimator's network and optimiser "
                         f"({type(exc).__name__}: {' '.join(lines[:2])[:300]})") from exc
    last = run.schedule.max_iter if run.schedule is not None else run.step
    if not 0 <= run.step <= last:
        raise ValueError(f"its step {run.step} is outside [0, {last}]")


def resume_from_checkpoint(run) -> bool:
    """Load the latest usable checkpoint of ``run`` (``run.checkpoint``) into it.

    The latest checkpoint is tried first, then the previous one; a damaged latest checkpoint
    is reported with a [`CheckpointWarning`][CheckpointWarning]. ``run`` is left untouched when
    nothing
    is loaded.

    Parameters
    ----------
    run : _TrainingRun
        A fresh run whose ``checkpoint`` is set.

    Returns
    -------
    bool
        Whether a checkpoint was loaded.

    Raises
    ------
    CheckpointError
        If checkpoint files exist but none can be used; the message names each file.
    """
    path = Path(run.checkpoint)
    candidates = [p for p in (path, previous_checkpoint(path)) if p.is_file()]
    if not candidates:
        return False
    fresh = copy.deepcopy(run.state_dict())  # deep: state_dict shares the parameters' storage
    problems = []
    for candidate in candidates:
        try:
            state = load_checkpoint(candidate)
            _restore(run, state)
        except (CheckpointError, ValueError) as exc:
            run.load_state_dict(fresh)  # undo a partial load
            problems.append(str(exc) if isinstance(exc, CheckpointError)
                            else f"the checkpoint {candidate} cannot be used: {exc}.")
            continue
        if problems:
            warnings.warn(f"{problems[0]} Resumed from the previous checkpoint {candidate} "
                          f"(step {run.step}) instead.", CheckpointWarning,
                          stacklevel=user_stacklevel())
        return True
    raise CheckpointError(" ".join(problems) + " Delete the file(s) to train this run from "
                          "the start, or use another checkpoint_dir.")
