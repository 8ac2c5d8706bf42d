"""Low-level reads of feature rows from files, keeping resident memory bounded.

Why not just index a ``np.memmap``? Pages of a mapping that were read stay counted in the
process's resident set (RSS) until the kernel wants them back, and on current Linux kernels
the page cache hands out large folios, so a fault maps up to 2 MB around the touched row: a
single minibatch of 2048 random rows from a 400 MB file maps the whole file. Reading rows
with ``pread`` into a fresh buffer goes through the same page cache without mapping
anything, so RSS grows only by the batch. [`RowFile`][RowFile] does that.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

HAS_PREAD = hasattr(os, "pread")  # not on Windows: there sources fall back to the memmap


def read_npy_header(path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """``(shape, dtype, fortran_order, data_offset)`` of a ``.npy`` file, data unread.

    Raises
    ------
    ValueError
        Naming the file, when it is not a ``.npy`` file or is shorter than its header says
        (a truncated copy would otherwise fail later, inside numpy or a read).
    """
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(fh)
            else:  # rarer header versions: let numpy parse them
                array = np.load(path, mmap_mode="r")
                return array.shape, array.dtype, bool(array.flags.f_contiguous and
                                                      not array.flags.c_contiguous), array.offset
            offset = fh.tell()
    except (ValueError, EOFError) as exc:  # numpy's "magic string is not correct" and kin
        raise ValueError(f"{path} is not a valid .npy file ({exc}).") from None
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = os.path.getsize(path)
    if actual < expected:
        raise ValueError(f"{path} is truncated: its header describes a {shape} {dtype} array "
                         f"({expected} bytes in all) but the file holds {actual} bytes; "
                         "re-create it (for shards: extract_to_shards redoes damaged shards).")
    return shape, dtype, fortran, offset


class RowFile:
    """Rows of a C-ordered (n, d) array stored at byte ``offset`` of ``path``, read by pread.

    The file descriptor is opened lazily and reopened after a fork or unpickling, so a
    RowFile can be handed to DataLoader workers.
    """

    def __init__(self, path, offset: int, shape: tuple[int, int], dtype):
        self.path = Path(path)
        self.offset = int(offset)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        self._fd: int | None = None
        self._pid: int | None = None

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to do
            pass

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_pid": None}

    def _read_into(self, buffer: np.ndarray, first_row: int) -> None:
        view = memoryview(buffer).cast("B")
        position = self.offset + first_row * self.row_bytes
        fd = self._descriptor()
        while len(view):
            got = os.preadv(fd, [view], position) if hasattr(os, "preadv") else \
                _pread_copy(fd, view, position)
            if got <= 0:
                raise OSError(f"{self.path} ended early: is the file truncated?")
            view, position = view[got:], position + got

    def read_slice(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` as float32, written into ``out`` when given."""
        if out is None:
            out = np.empty((stop - start, self.shape[1]), dtype=np.float32)
        # float32 files are read straight into the result: no second copy of the chunk.
        buffer = out if self.dtype == out.dtype and out.flags.c_contiguous else \
            np.empty((stop - start, self.shape[1]), dtype=self.dtype)
        if stop > start:
            self._read_into(buffer, start)
        if buffer is not out:
            out[...] = buffer
        return out

    def read_rows(self, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` (valid, non-negative, any order) as float32 of shape (k, d)."""
        if len(indices) == 0:
            return np.empty((0, self.shape[1]), dtype=np.float32)
        unique, inverse = np.unique(indices, return_inverse=True)
        buffer = np.empty((len(unique), self.shape[1]), dtype=self.dtype)
        # One read per run of consecutive rows: sorted batches read forward through the file.
        run_starts = np.flatnonzero(np.diff(unique, prepend=-2) != 1)
        run_stops = np.append(run_starts[1:], len(unique))
        for a, b in zip(run_starts.tolist(), run_stops.tolist(), strict=True):
            self._read_into(buffer[a:b], int(unique[a]))
        return buffer[inverse.reshape(-1)].astype(np.float32, copy=False)


def _pread_copy(fd: int, view: memoryview, position: int) -> int:
    data = os.pread(fd, len(view), position)
    view[:len(data)] = data
    return len(data)


def find_mmap(array) -> mmap.mmap | None:
    """The ``mmap`` object behind ``array``, if any (walks the ``.base`` chain)."""
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


def _memmap_mode(array) -> str | None:
    """The mode of the first ``np.memmap`` in ``array``'s ``.base`` chain, or None."""
    base = array
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    return None if base is None else base.mode


def _maps_same_file(buffer_address: int, path) -> bool:
    """Whether the mapping at ``buffer_address`` is still the file now at ``path``.

    A memmap keeps the file it mapped even after that file is deleted or replaced under
    its name; reading ``path`` again would then fail or read other bytes. Checked through
    /proc/self/maps (device and inode of the mapping); assumed where there is no /proc.
    """
    try:
        with open("/proc/self/maps") as fh:
            lines = fh.readlines()
    except OSError:
        return True
    try:
        status = os.stat(path)
    except OSError:
        return False
    for line in lines:
        fields = line.split(maxsplit=5)
        low, high = (int(v, 16) for v in fields[0].split("-"))
        if low <= buffer_address < high:
            major, minor = (int(v, 16) for v in fields[3].split(":"))
            return (int(fields[4]) == status.st_ino
                    and os.makedev(major, minor) == status.st_dev)
    return True


def memmap_row_file(array) -> RowFile | None:
    """A [`RowFile`][RowFile] reading the same bytes as the memmap ``array``, or None.

    Only for C-contiguous 2-D memmaps with shared semantics: on a copy-on-write memmap
    (mode "c") the user's in-memory edits are not in the file.
    """
    filename = getattr(array, "filename", None)
    mm = find_mmap(array)
    if not HAS_PREAD or filename is None or mm is None or array.ndim != 2 or \
            not array.flags.c_contiguous or getattr(array, "mode", None) == "c":
        return None
    # np.memmap maps from an allocation-aligned start below its requested offset.
    map_start = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY
    buffer_address = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    if not _maps_same_file(buffer_address, filename):
        return None  # deleted or replaced since it was mapped: read through the memmap
    return RowFile(filename, map_start + (array.ctypes.data - buffer_address), array.shape,
                   array.dtype)


def release_pages(array) -> None:
    """Drop the pages of ``array``'s mapping from this process's resident set.

    For the memmap fallback path (no pread, copy-on-write or strided memmaps). Only for a
    mapping that an ``np.memmap`` in ``array``'s ``.base`` chain opened shared (modes "r",
    "r+", "w+"): on a private one (mode "c", also behind a plain ndarray view of it) or one
    of unknown kind, MADV_DONTNEED would discard the user's in-memory edits.
    """
    if _memmap_mode(array) not in ("r", "r+", "w+"):
        return
    mm = find_mmap(array)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        mm.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # closed map or a platform without the advice: harmless
        pass


def gather_rows(array, indices: np.ndarray) -> np.ndarray:
    """``array[indices]`` as float32, reading the storage in increasing row order."""
    if len(indices) > 1 and np.any(indices[1:] < indices[:-1]):
        order = np.argsort(indices, kind="stable")
        out = np.empty((len(indices), array.shape[1]), dtype=np.float32)
        out[order] = array[indices[order]]
        return out
    return np.asarray(array[indices], dtype=np.float32)
