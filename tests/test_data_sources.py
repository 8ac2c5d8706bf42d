"""Feature sources and minibatch loaders: numpy-equivalent indexing, errors, bounded memory."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from spectralnet_seg.data import (
    ArraySource,
    FeatureSource,
    NpyShardSource,
    RowBatchSampler,
    TorchDatasetSource,
    as_feature_source,
    check_finite_chunked,
    make_loader,
    set_epoch,
)

N, D = 103, 7
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)


def _write_shards(directory: Path, data: np.ndarray, sizes) -> list[Path]:
    directory.mkdir()
    bounds = np.cumsum([0, *sizes])
    paths = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        paths.append(directory / f"part_{i:03d}.npy")
        np.save(paths[-1], data[a:b])
    return paths


SOURCE_KINDS = ["ndarray", "memmap", "memmap_cow", "float16_file", "shards", "dataset",
                "tensor", "bf16_tensor"]


@pytest.fixture(params=SOURCE_KINDS)
def source_and_reference(request, data, tmp_path):
    """Every kind of source over the same data, with the float32 values it must return."""
    kind = request.param
    path = tmp_path / "x.npy"
    if kind == "ndarray":
        return ArraySource(data), data
    if kind == "memmap":
        np.save(path, data)
        return as_feature_source(path), data
    if kind == "memmap_cow":  # copy-on-write: indexed through the mapping, pages released
        np.save(path, data)
        return ArraySource(np.load(path, mmap_mode="c"), max_resident_bytes=1), data
    if kind == "float16_file":
        np.save(path, data.astype(np.float16))
        return as_feature_source(str(path)), data.astype(np.float16).astype(np.float32)
    if kind == "shards":  # uneven shards, one of them empty
        _write_shards(tmp_path / "shards", data, [40, 0, 50, 13])
        return as_feature_source(tmp_path / "shards"), data
    if kind == "dataset":
        return as_feature_source(TensorDataset(torch.from_numpy(data))), data
    if kind == "tensor":
        return as_feature_source(torch.from_numpy(data)), data
    tensor = torch.from_numpy(data).to(torch.bfloat16)
    return as_feature_source(tensor), tensor.float().numpy()


INDEX_KEYS = [
    np.array([5, 0, 5, 102, -1, -103, 50, 49]),  # unsorted, repeats, negatives
    [3, 1, 2],
    slice(5, 50), slice(None, None, 3), slice(-10, None), slice(50, 5), slice(None),
    np.array([], dtype=np.int64), [],
]


@pytest.mark.parametrize("key", INDEX_KEYS, ids=repr)
def test_indexing_matches_numpy(source_and_reference, key):
    source, ref = source_and_reference
    out = source[key]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref[key].reshape(-1, D))


def test_scalar_mask_and_column_indexing(source_and_reference):
    source, ref = source_and_reference
    assert isinstance(source, FeatureSource)
    assert source.shape == (N, D) and len(source) == N and source.ndim == 2
    np.testing.assert_array_equal(source[7], ref[7])
    np.testing.assert_array_equal(source[np.int64(-1)], ref[-1])
    mask = np.arange(N) % 4 == 1
    np.testing.assert_array_equal(source[mask], ref[mask])
    np.testing.assert_array_equal(source[[4, 2], [0, 3]], ref[[4, 2]][:, [0, 3]])
    np.testing.assert_array_equal(source[10:20, 2], ref[10:20, 2])
    np.testing.assert_array_equal(np.asarray(source), ref)
    np.testing.assert_array_equal(source.take([9, 9]), ref[[9, 9]])


@pytest.mark.parametrize("chunk_size", [1, 10, N, 1000])
def test_iter_chunks_covers_rows_in_order(source_and_reference, chunk_size):
    source, ref = source_and_reference
    chunks = list(source.iter_chunks(chunk_size))
    assert all(len(c) == chunk_size for c in chunks[:-1]) and 0 < len(chunks[-1]) <= chunk_size
    np.testing.assert_array_equal(np.concatenate(chunks), ref)


@pytest.mark.parametrize("n_features, rows_per_chunk", [(4, 8192), (1024, 2048), (3000, 699)])
def test_default_chunks_hold_about_8_mib_whatever_the_width(n_features, rows_per_chunk):
    # 8 MiB of float32 is 2**21 values: 2048 rows of 1024, floor(2**21 / 3000) = 699 rows
    # of 3000; narrow rows stop at 8192.
    ref = np.arange((rows_per_chunk + 5) * n_features, dtype=np.float32).reshape(-1, n_features)
    chunks = list(ArraySource(ref).iter_chunks())
    assert [len(c) for c in chunks] == [rows_per_chunk, 5]
    np.testing.assert_array_equal(np.concatenate(chunks), ref)


def test_results_are_copies_not_views(tmp_path, data):
    np.save(tmp_path / "x.npy", data)
    memmap = np.load(tmp_path / "x.npy", mmap_mode="r+")
    rows = ArraySource(memmap)[0:3]
    rows[:] = 0  # must not write through to the file
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy")[0:3], data[0:3])


def test_copy_on_write_edits_survive_page_release(tmp_path, data):
    # MADV_DONTNEED on a private mapping would silently revert these edits.
    np.save(tmp_path / "x.npy", data)
    memmap = np.load(tmp_path / "x.npy", mmap_mode="c")
    memmap[5] = 42.0
    source = ArraySource(memmap, max_resident_bytes=1)
    for _ in range(3):
        source.take(np.arange(N))
    np.testing.assert_array_equal(source[5], np.full(D, 42.0, dtype=np.float32))


def test_copy_on_write_edits_survive_page_release_through_a_plain_view(tmp_path, data):
    # np.asarray(memmap) has no ``mode``: the guard must look through its .base chain.
    np.save(tmp_path / "x.npy", data)
    memmap = np.load(tmp_path / "x.npy", mmap_mode="c")
    memmap[5] = 42.0
    view = np.asarray(memmap)
    source = ArraySource(view, max_resident_bytes=1)
    for _ in range(3):
        source.take(np.arange(N))
    np.testing.assert_array_equal(view[5], np.full(D, 42.0, dtype=np.float32))
    np.testing.assert_array_equal(source[5], np.full(D, 42.0, dtype=np.float32))


@pytest.mark.parametrize("change", ["replaced", "deleted"])
def test_memmap_whose_file_changed_under_its_name_reads_its_own_rows(tmp_path, data, change):
    # A memmap keeps the file it mapped; re-opening the path would read other bytes or fail.
    np.save(tmp_path / "x.npy", data)
    memmap = np.load(tmp_path / "x.npy", mmap_mode="r")
    if change == "replaced":  # written elsewhere, then moved over the name
        np.save(tmp_path / "y.npy", -data)
        os.replace(tmp_path / "y.npy", tmp_path / "x.npy")
    else:
        os.unlink(tmp_path / "x.npy")
    np.testing.assert_array_equal(ArraySource(memmap)[[1, 7, -1]], data[[1, 7, -1]])


def test_memmap_pickles_by_reference(tmp_path):
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32,
                                    shape=(20000, 16))
    big[:] = np.arange(16, dtype=np.float32)
    big.flush()
    for source in (as_feature_source(tmp_path / "big.npy"), ArraySource(big[100:])):
        payload = pickle.dumps(source)
        assert len(payload) < 4000  # a file reference, not 1.3 MB of rows
        clone = pickle.loads(payload)
        np.testing.assert_array_equal(clone[[0, 5, -1]], source[[0, 5, -1]])
    assert ArraySource(big[100:])[0][3] == 3.0


def test_shard_source_reads_each_shard_and_limits_open_files(tmp_path, data):
    paths = _write_shards(tmp_path / "s", data, [10] * 10 + [3])
    source = NpyShardSource([str(p) for p in paths], max_open_shards=2)
    assert source.n_shards == 11 and source.offsets[-1] == N
    idx = np.random.default_rng(1).integers(0, N, 300)
    np.testing.assert_array_equal(source[idx], data[idx])
    assert len(source._open) <= 2
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone[idx], data[idx])


def test_torch_dataset_of_tuples_and_arrays():
    rows = np.arange(12, dtype=np.float64).reshape(4, 3)

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return rows[i], i  # (features, label)

    source = as_feature_source(Pairs())
    assert isinstance(source, TorchDatasetSource) and source.shape == (4, 3)
    np.testing.assert_array_equal(source[[2, 0]], rows[[2, 0]].astype(np.float32))


def test_nested_lists_are_accepted():
    np.testing.assert_array_equal(as_feature_source([[1, 2], [3, 4]])[1], [3.0, 4.0])
    source = ArraySource(np.ones((2, 2)))
    assert as_feature_source(source) is source


# ------------------------------------------------------------------------ errors
def test_bad_inputs_give_clear_errors(tmp_path, data):
    with pytest.raises(ValueError, match="must be 2-D"):
        ArraySource(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="must hold numbers"):
        ArraySource(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="cannot use"):
        as_feature_source([[1, 2], [3]])
    with pytest.raises(FileNotFoundError, match="no shard directory"):
        as_feature_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .npy files"):
        as_feature_source(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a .npy file"):
        as_feature_source(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="empty"):
        TorchDatasetSource(TensorDataset(torch.zeros(0, 3)))
    (tmp_path / "mixed").mkdir()
    np.save(tmp_path / "mixed" / "a.npy", np.zeros((2, 3)))
    np.save(tmp_path / "mixed" / "b.npy", np.zeros((2, 4)))
    with pytest.raises(ValueError, match="disagree on n_features"):
        NpyShardSource(tmp_path / "mixed")
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.zeros((3, 4))))
    with pytest.raises(ValueError, match="Fortran order"):
        NpyShardSource([tmp_path / "fortran.npy"])
    # Zero columns: its reads failed inside memoryview ("cannot cast view with zeros").
    np.save(tmp_path / "no_columns.npy", np.zeros((4, 0), np.float32))
    with pytest.raises(ValueError, match="0 features per row"):
        NpyShardSource([tmp_path / "no_columns.npy"])


@pytest.mark.parametrize("key, error, message", [
    ([0, N], IndexError, "out of bounds"),
    ([-N - 1], IndexError, "out of bounds"),
    ([0.5], IndexError, "integers or booleans"),
    (np.ones(3, dtype=bool), IndexError, "does not match"),
    (np.zeros((2, 2), dtype=int), IndexError, "1-D"),
    ((0, 1, 2), IndexError, "2-D"),
    (np.array([2**64 - 1], dtype=np.uint64), IndexError, "out of bounds"),  # not row -1
])
def test_bad_indices(data, key, error, message):
    with pytest.raises(error, match=message):
        ArraySource(data)[key]


def test_chunk_size_must_be_positive(data):
    with pytest.raises(ValueError, match="chunk_size"):
        next(ArraySource(data).iter_chunks(0))


# ------------------------------------------------------------------------ finiteness
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_names_first_bad_row(tmp_path, data, bad):
    dirty = data.copy()
    dirty[77, 4] = bad
    dirty[90, 0] = bad
    np.save(tmp_path / "x.npy", dirty)
    with pytest.raises(ValueError, match=r"row 77, column 4"):
        check_finite_chunked(tmp_path / "x.npy", chunk_size=10)
    source = ArraySource(data)
    assert check_finite_chunked(source, chunk_size=10) is source


# ------------------------------------------------------------------------ loader
def _epoch(loader) -> list[np.ndarray]:
    return [b.numpy() for b in loader]


def test_loader_batches_are_float32_rows_of_one_permutation(data):
    loader = make_loader(data, batch_size=10, random_state=0, return_indices=True)
    assert len(loader) == N // 10
    seen = []
    for indices, rows in loader:
        assert rows.dtype == torch.float32 and rows.shape == (10, D)
        np.testing.assert_array_equal(rows.numpy(), data[indices.numpy()])
        seen.extend(indices.tolist())
    assert len(seen) == len(set(seen)) == 100  # drop_last: 3 rows left out, none repeated


def test_loader_is_seeded_and_epochs_differ(data):
    first, second = make_loader(data, 16, random_state=3), make_loader(data, 16, random_state=3)
    a0, a1 = _epoch(first), _epoch(first)
    b0 = _epoch(second)
    np.testing.assert_array_equal(np.stack(a0), np.stack(b0))
    assert not np.array_equal(np.stack(a0), np.stack(a1))
    set_epoch(second, 0)  # replay epoch 0, e.g. after resuming a run
    np.testing.assert_array_equal(np.stack(_epoch(second)), np.stack(a0))
    other = _epoch(make_loader(data, 16, random_state=4))
    assert not np.array_equal(np.stack(a0), np.stack(other))
    gen_a = _epoch(make_loader(data, 16, generator=torch.Generator().manual_seed(1)))
    gen_b = _epoch(make_loader(data, 16, generator=torch.Generator().manual_seed(1)))
    np.testing.assert_array_equal(np.stack(gen_a), np.stack(gen_b))


def test_loader_without_shuffle_keeps_order_and_last_batch(data):
    batches = _epoch(make_loader(data, 25, shuffle=False, drop_last=False))
    assert [len(b) for b in batches] == [25, 25, 25, 25, 3]
    np.testing.assert_array_equal(np.concatenate(batches), data)


def test_loader_workers_give_the_same_batches(tmp_path, data):
    np.save(tmp_path / "x.npy", data)
    serial = _epoch(make_loader(tmp_path / "x.npy", 20, random_state=0))
    parallel = _epoch(make_loader(tmp_path / "x.npy", 20, random_state=0, num_workers=2))
    np.testing.assert_array_equal(np.stack(serial), np.stack(parallel))


@pytest.mark.parametrize("drop_last", [True, False])
def test_sampler_splits_one_permutation_across_ranks(drop_last):
    world = 3
    parts = [np.concatenate(list(RowBatchSampler(N, 8, seed=5, rank=r, world_size=world,
                                                 drop_last=drop_last)))
             for r in range(world)]
    sizes = {len(p) for p in parts}
    assert len(sizes) == 1  # every rank does the same number of steps
    rows = np.concatenate(parts)
    if drop_last:
        assert len(set(rows.tolist())) == len(rows)  # disjoint
    else:
        assert set(rows.tolist()) == set(range(N))  # everything, a few rows twice


def test_custom_batch_sampler_is_used(data):
    loader = make_loader(data, 1, batch_sampler=[np.array([3, 4]), np.array([0])])
    np.testing.assert_array_equal(np.concatenate(_epoch(loader)), data[[3, 4, 0]])


def test_loader_argument_errors(data):
    with pytest.raises(ValueError, match="leaves no batch"):
        make_loader(data, batch_size=N + 1)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(data, batch_size=0)
    with pytest.raises(ValueError, match="pin_memory"):
        make_loader(data, 4, pin_memory="yes")
    with pytest.raises(ValueError, match="num_workers"):
        make_loader(data, 4, num_workers=-1)
    with pytest.raises(ValueError, match="rank"):
        RowBatchSampler(N, 4, rank=2, world_size=2)


# ------------------------------------------------------------------------ memory bound
# The peak is read from the child's own VmHWM after resetting it once the imports are done.
# ru_maxrss (RUSAGE_CHILDREN, wait4) would not do: Linux carries into it the RSS of the
# forked copy of the parent before exec, i.e. the size of this pytest process.
_PEAK_TOOLS = textwrap.dedent("""
    def _status_mb(field):
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith(field + ":")) / 1024
    def reset_peak():
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_mb("VmRSS")
    def peak():
        return _status_mb("VmHWM")
""")

# Streams the file through both file-backed sources: finiteness check, a chunked pass and a
# full shuffled epoch of make_loader minibatches.
_STREAM_SCRIPT = _PEAK_TOOLS + textwrap.dedent("""
    import json, sys
    import numpy as np
    from spectralnet_seg.data import ArraySource, NpyShardSource, check_finite_chunked, make_loader
    path = sys.argv[1]
    report = {"baseline_mb": reset_peak()}  # after importing torch and the package
    for k, source in enumerate([ArraySource(np.load(path, mmap_mode="r")),
                                NpyShardSource([path])]):
        check_finite_chunked(source, chunk_size=4096)
        report[f"col0_sum_{k}"] = sum(float(c[:, 0].sum(dtype=np.float64))
                                      for c in source.iter_chunks(4096))
        report[f"rows_{k}"] = sum(len(b) for b in make_loader(source, 2048, random_state=0))
    report["peak_mb"] = peak()
    print(json.dumps(report))
""")

# Control: the same shuffled epoch by indexing the np.memmap directly (no torch needed).
_CONTROL_SCRIPT = _PEAK_TOOLS + textwrap.dedent("""
    import json, sys
    import numpy as np
    path = sys.argv[1]
    baseline = reset_peak()
    array = np.load(path, mmap_mode="r")
    order = np.random.default_rng(0).permutation(len(array))
    rows = sum(len(array[np.sort(order[i:i + 2048])]) for i in range(0, len(order), 2048))
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak(), "rows_0": rows}))
""")


def _run_child(script: str, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                          env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                    reason="peak-RSS reset needs Linux /proc/self/clear_refs")
def test_streaming_a_memmap_larger_than_the_budget_keeps_rss_bounded(tmp_path):
    n, d = 102400, 1024  # 400 MiB of float32 (d as for concatenated ViT tokens)
    path = tmp_path / "features.npy"
    with open(path, "wb") as fh:  # written in chunks: this process never holds the file
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
        columns = np.arange(d, dtype=np.float32)
        for start in range(0, n, 8192):
            rows = np.arange(start, min(n, start + 8192), dtype=np.float32)[:, None]
            fh.write((rows * 1e-3 + columns).tobytes())
    file_mb = path.stat().st_size / 2**20

    report = _run_child(_STREAM_SCRIPT, path)
    growth = report["peak_mb"] - report["baseline_mb"]
    control = _run_child(_CONTROL_SCRIPT, path)
    control_growth = control["peak_mb"] - control["baseline_mb"]
    print(f"\nfile {file_mb:.0f} MiB; sources (finite check + chunked pass + 1 shuffled "
          f"epoch, array and shard source): baseline {report['baseline_mb']:.0f} MiB, peak "
          f"{report['peak_mb']:.0f} MiB, growth {growth:.0f} MiB; control (indexing the "
          f"memmap): growth {control_growth:.0f} MiB")

    expected_col0 = float(np.arange(n, dtype=np.float32).astype(np.float64).sum() * 1e-3)
    for k in (0, 1):
        assert report[f"rows_{k}"] == n  # one full epoch of minibatches
        assert report[f"col0_sum_{k}"] == pytest.approx(expected_col0, rel=1e-5)
    assert control["rows_0"] == n
    assert growth < 0.2 * file_mb
    # The measurement is sensitive: the same epoch through the mapping shows up in RSS.
    assert control_growth > 0.5 * file_mb


def test_loader_batch_sampler_masks_and_floats_follow_the_source_rules():
    """np.asarray(indices, int64) read a boolean mask as rows 0/1 and 0.5 as row 0."""
    X = np.arange(10, dtype=np.float32).reshape(5, 2)
    mask = np.array([0, 0, 1, 1, 1], bool)
    (rows,) = list(make_loader(X, 2, batch_sampler=[mask]))
    np.testing.assert_array_equal(rows.numpy(), X[2:])
    with pytest.raises(IndexError, match="integers or booleans"):
        list(make_loader(X, 2, batch_sampler=[np.array([0.5])]))


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows, dedupe=False):
        self.rows, self.dedupe = rows, dedupe

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def __getitems__(self, indices):
        unique = list(dict.fromkeys(indices)) if self.dedupe else indices
        return [self.rows[i] for i in unique]


def test_torch_dataset_sources_check_items_and_kind():
    rows = [np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([5.0, 6.0])]
    with pytest.raises(ValueError, match="returned 2 items for 3 indices"):  # was np.empty
        as_feature_source(_Rows(rows, dedupe=True)).take([1, 1, 2])

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(rows)

        def __len__(self):
            return 3

    with pytest.raises(TypeError, match="iterable datasets cannot be indexed"):
        as_feature_source(Stream())  # was torch's NotImplementedError at the first read


def test_neural_input_check_reads_each_row_of_a_source_once():
    """The float32 check read every chunk of a feature source twice (once to convert it,
    once more for the message it might need): twice the I/O of the validation pass."""
    from sklearn.base import BaseEstimator

    from spectralnet_seg.cluster._neural_io import validate_rows

    reads = []

    class Counted(torch.utils.data.Dataset):
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            reads.append(i)
            return self.rows[i]

    rows = list(np.random.default_rng(0).normal(size=(300, 4)))
    validate_rows(BaseEstimator(), as_feature_source(Counted(rows)), reset=True)
    assert len(reads) <= len(rows) + 1  # + the first item, read for the dtype


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_neural_fit_checks_every_row_of_lazy_inputs(tmp_path):
    from spectralnet_seg.cluster import NeuralEigenClustering

    rng = np.random.default_rng(0)
    rows = [np.array([1, 2, 3])] + [rng.normal(size=3) for _ in range(40)]
    rows[7] = np.array([0.0, np.nan, 1.0])  # item 0 holds integers: its dtype is int64
    with pytest.raises(ValueError, match="row 7, column 1"):
        NeuralEigenClustering(2, max_iter=2, random_state=0).fit(_Rows(rows))
    big = rng.normal(size=(40, 3))
    big[3, 1] = 1e39  # finite in float64, inf in float32
    np.save(tmp_path / "big.npy", big)
    # the source reads its float64 storage for the check: the value is named, not 'inf'
    match = r"beyond float32's range \(\|value\| up to 1e\+39, .*first at row 3, column 1\)"
    with pytest.raises(ValueError, match=match):
        NeuralEigenClustering(2, max_iter=2, random_state=0).fit(tmp_path / "big.npy")
    with pytest.raises(ValueError, match=match):
        NeuralEigenClustering(2, max_iter=2, random_state=0).fit(
            np.load(tmp_path / "big.npy", mmap_mode="r"))
    big[3, 1] = np.inf  # a stored inf is the data's own: no advice about float32's range
    np.save(tmp_path / "inf.npy", big)
    with pytest.raises(ValueError, match=r"X contains NaN or infinity: first at row 3"):
        NeuralEigenClustering(2, max_iter=2, random_state=0).fit(tmp_path / "inf.npy")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_neural_fit_reports_float32_rounding_of_float64_files(tmp_path):
    """A float64 .npy or memmap was read as float32 rows before the rounding check could see
    its values: an offset a million times the spread lost its detail without a warning, which
    the same data in memory got."""
    from sklearn.exceptions import DataConversionWarning

    from spectralnet_seg.cluster import NeuralEigenClustering

    X = np.random.default_rng(0).normal(size=(200, 4)) + 1e6
    np.save(tmp_path / "offset.npy", X)
    for data in (X, tmp_path / "offset.npy", np.load(tmp_path / "offset.npy", mmap_mode="r"),
                 NpyShardSource(tmp_path / "offset.npy")):
        with pytest.warns(DataConversionWarning, match="X is converted to float32"):
            NeuralEigenClustering(2, max_iter=2, random_state=0).fit(data)
    stored = as_feature_source(tmp_path / "offset.npy").read_stored(5, 9)
    assert stored.dtype == np.float64
    np.testing.assert_array_equal(stored, X[5:9])
    np.testing.assert_array_equal(NpyShardSource(tmp_path / "offset.npy").read_stored(5, 9),
                                  X[5:9])


def test_shard_directory_without_manifest_reads_feature_files_in_natural_order(tmp_path):
    """The side files were read as feature rows, and part_10 came before part_2."""
    blocks = [np.full((2, 3), i, np.float32) for i in range(11)]
    for i, block in enumerate(blocks):
        np.save(tmp_path / f"part_{i}.npy", block)
        np.save(tmp_path / f"part_{i}_colors.npy", np.full((2, 3), -1.0, np.float32))
        np.save(tmp_path / f"part_{i}_positions.npy", np.full((2, 2), -1.0, np.float32))
    source = as_feature_source(tmp_path)
    assert source.shape == (22, 3)
    np.testing.assert_array_equal(source.take(np.arange(22)), np.concatenate(blocks))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tensors_fit_as_their_float32_values(dtype):
    """Half tensors are read a minibatch at a time (no whole float32 copy); the fit is the
    one of the same values in float32."""
    from sklearn.datasets import make_blobs

    from spectralnet_seg.cluster import NeuralEigenClustering

    X, _ = make_blobs(300, centers=3, n_features=8, random_state=0)
    half = torch.tensor(X, dtype=dtype)
    a = NeuralEigenClustering(3, max_iter=50, random_state=0).fit(half)
    b = NeuralEigenClustering(3, max_iter=50, random_state=0).fit(half.float())
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.predict(half[:20]), b.predict(half[:20].float()))
    with pytest.raises(ValueError, match="Expected 2D array"):
        NeuralEigenClustering(3, max_iter=5).fit(half.reshape(3, 100, 8))


def test_loader_distributed_without_a_process_group_is_refused():
    """Was silently unsplit: every rank would have read every row."""
    with pytest.raises(ValueError, match="needs an initialised torch.distributed"):
        make_loader(np.zeros((10, 2), np.float32), 2, distributed=True)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_paths_are_read_by_the_neural_estimators_and_named_by_eigsh(tmp_path):
    """A list of .npy files was refused as "X holds strings" although the data layer reads
    it; an upper-case .NPY file was called "not a .npy file"; eigsh said "strings" of a path."""
    from sklearn.datasets import make_blobs

    from spectralnet_seg.cluster import EigshSpectralClustering, NeuralEigenClustering

    X, _ = make_blobs(120, centers=3, n_features=4, random_state=0)
    X = X.astype(np.float32)
    np.save(tmp_path / "a.npy", X[:70])
    np.save(tmp_path / "b.npy", X[70:])
    (tmp_path / "upper.NPY").write_bytes((tmp_path / "a.npy").read_bytes())

    def fit(data):
        return NeuralEigenClustering(3, max_iter=30, random_state=0).fit(data).labels_

    in_memory = fit(X)
    for paths in ([tmp_path / "a.npy", tmp_path / "b.npy"],
                  (str(tmp_path / "a.npy"), str(tmp_path / "b.npy"))):
        np.testing.assert_array_equal(fit(paths), in_memory)
    np.testing.assert_array_equal(fit(tmp_path / "upper.NPY"), fit(X[:70]))
    for data in (str(tmp_path / "a.npy"), [tmp_path / "a.npy", tmp_path / "b.npy"]):
        with pytest.raises(ValueError, match=r"file path.*load it first \(e\.g\. np\.load"):
            EigshSpectralClustering(3).fit(data)
    with pytest.raises(ValueError, match="holds strings"):  # words, not paths
        EigshSpectralClustering(3).fit([["a", "b"], ["c", "d"]])
