"""A neural estimator fits a memory-mapped feature file larger than the memory it may use.

The fit runs in a child process that, once torch is imported, caps its private data memory
(``RLIMIT_DATA``) below the size of the file and resets its peak-RSS counter; it then fits
on the memmap, a shard directory holding the same rows, and finally (the control) tries to
load the file into memory, which the cap must refuse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
N_ROWS, N_FEATURES = 102400, 1024  # 400 MiB of float32 (d as for concatenated ViT tokens)

_FIT_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from sklearn.metrics import adjusted_rand_score
    from spectralnet_seg.cluster import NeuralEigenClustering
    from spectralnet_seg.data import NpyShardSource
    from spectralnet_seg.kernels import make_kernel

    def status_mb(field):
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith(field + ":")) / 1024

    path, shard_dir, cap_mb = sys.argv[1], sys.argv[2], float(sys.argv[3])
    def make():
        return NeuralEigenClustering(4, kernel=make_kernel("rbf", gamma=1e-3),
                                     hidden_layer_sizes=(32,), batch_size=256, max_iter=20,
                                     n_init=1, device="cpu", random_state=0)
    make().fit(np.random.default_rng(0).random((512, 8)))  # warm up torch's allocators
    report = {"data_before_cap_mb": status_mb("VmData")}
    cap = int((status_mb("VmData") + cap_mb) * 2**20)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM, the peak RSS
    report["baseline_mb"] = status_mb("VmRSS")
    labels = []
    for source in (np.load(path, mmap_mode="r"), NpyShardSource(shard_dir)):
        est = make().fit(source)
        labels.append(est.labels_)
    report["peak_mb"] = status_mb("VmHWM")
    report["n_labels"] = len(labels[0])
    report["truth_ari"] = adjusted_rand_score(np.arange(len(labels[0])) // 25600, labels[0])
    report["sources_agree"] = bool(np.array_equal(labels[0], labels[1]))
    try:
        np.load(path)  # the control: the whole file in memory exceeds the cap
        report["control"] = "loaded"
    except MemoryError:
        report["control"] = "MemoryError"
    print(json.dumps(report))
""")


def _write_features(path: Path, n: int, d: int, block: int = 8192) -> None:
    """Four well separated groups of n/4 consecutive rows, written without holding them."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
        rng = np.random.default_rng(0)
        centres = 3.0 * rng.standard_normal((4, d)).astype(np.float32)
        # One block of noise, rolled per block: drawing 10^8 normals would dominate the test.
        noise = rng.standard_normal((block, d), dtype=np.float32)
        for start in range(0, n, block):
            rows = np.arange(start, min(n, start + block))
            block_noise = np.roll(noise, start // block, axis=1)[:len(rows)]
            fh.write((centres[rows * 4 // n] + block_noise).tobytes())


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                    reason="peak-RSS reset needs Linux /proc/self/clear_refs")
def test_memmap_fit_larger_than_its_memory_cap(tmp_path):
    path = tmp_path / "features.npy"
    _write_features(path, N_ROWS, N_FEATURES)
    shard_dir = tmp_path / "shards"  # the same rows as two .npy shards
    shard_dir.mkdir()
    features = np.load(path, mmap_mode="r")
    for k, part in enumerate(np.array_split(np.arange(N_ROWS), 2)):
        np.save(shard_dir / f"part{k}.npy", features[part[0]:part[-1] + 1])
    del features
    file_mb = path.stat().st_size / 2**20
    cap_mb = file_mb / 2

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _FIT_SCRIPT, str(path), str(shard_dir),
                           str(cap_mb)], capture_output=True, env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    growth = report["peak_mb"] - report["baseline_mb"]
    print(f"\nfile {file_mb:.0f} MiB, data cap +{cap_mb:.0f} MiB; two fits (memmap, shards): "
          f"RSS baseline {report['baseline_mb']:.0f} MiB, peak {report['peak_mb']:.0f} MiB, "
          f"growth {growth:.0f} MiB; loading the file: {report['control']}; "
          f"ARI {report['truth_ari']:.3f}")
    assert report["control"] == "MemoryError"  # the cap is real: the file does not fit
    assert report["n_labels"] == N_ROWS and report["sources_agree"]
    assert report["truth_ari"] > 0.9  # the fit saw the data, not just its shape
    # What stays resident is chunk-sized buffers (8192 rows for checks and inference) and
    # the (n, K) embedding, not the file.
    assert growth < 0.4 * file_mb


def test_eigsh_refuses_a_knn_graph_over_budget_before_starting(capsys):
    from spectralnet_seg.cluster import EigshSpectralClustering
    from spectralnet_seg.kernels import KNNKernel
    from spectralnet_seg.neighbors import KNNMemoryError, estimate_knn_memory

    X = np.random.default_rng(0).random((2000, 64)).astype(np.float32)
    budget = estimate_knn_memory(2000, 2000, 64, 11) - 1  # one byte short of the estimate
    kernel = KNNKernel(10, index_params={"max_memory_bytes": budget}, verbose=True)
    with pytest.raises(KNNMemoryError, match=r"GiB.*index='ivf'.*max_memory_bytes"):
        EigshSpectralClustering(4, kernel=kernel).fit(X)
    assert "GiB estimated" in capsys.readouterr().err  # printed before the refusal
    kernel = KNNKernel(10, index_params={"max_memory_bytes": budget + 1})
    assert EigshSpectralClustering(4, kernel=kernel).fit(X).labels_.shape == (2000,)


def test_partial_fit_streams_shards_through_a_dataloader(tmp_path):
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    from spectralnet_seg.cluster import NeuralEigenClustering
    from spectralnet_seg.data import NpyShardSource, make_loader
    from spectralnet_seg.kernels import make_kernel

    X, y = make_blobs(1200, centers=3, cluster_std=0.5, random_state=0)
    for k, part in enumerate(np.array_split(np.arange(1200), 3)):
        np.save(tmp_path / f"part{k}.npy", X[part].astype(np.float32))
    source = NpyShardSource(tmp_path)  # every .npy of the folder, in name order
    loader = make_loader(source, batch_size=400, num_workers=2, random_state=0,
                         persistent_workers=True)
    est = NeuralEigenClustering(3, kernel=make_kernel("rbf", gamma=0.5),
                                hidden_layer_sizes=(32,), batch_size=100, n_init=1,
                                device="cpu", random_state=0)
    for _ in range(6):  # epochs; each loader pass is a new permutation
        for chunk in loader:  # (400, 2) float32 tensors gathered by worker processes
            est.partial_fit(chunk)
    assert est.n_iter_ == 6 * 3 * 4 and est.n_train_samples_ == 6 * 1200
    assert adjusted_rand_score(y, est.predict(source)) > 0.9
