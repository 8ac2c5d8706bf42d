"""Fit time, peak memory, predict throughput and accuracy vs N: eigsh vs neural eigenfunctions.

Data: ``n_clusters`` Gaussian clusters in a low-dimensional latent space, pushed through a
fixed random two-layer tanh map into d = 384 dimensions (the ViT-S feature size) plus a
little isotropic noise — clusters on a curved low-dimensional manifold, with known labels.
``--features X.npy [--labels y.npy]`` uses real features instead (rows sampled per N).

Methods, all on the same cosine kNN kernel (k = 10):

* ``eigsh-flat`` — :class:`~spectralnet_seg.cluster.EigshSpectralClustering` on the exact
  faiss kNN graph; out-of-sample by the Nyström extension;
* ``eigsh-hnsw`` — the same with the approximate HNSW kNN graph;
* ``sklearn`` — scikit-learn's ``SpectralClustering(affinity="nearest_neighbors")`` (no
  out-of-sample predict);
* ``neural`` / ``discrete`` — :class:`NeuralEigenClustering` /
  :class:`DiscreteNeuralEigenClustering`, a fixed number of minibatch steps.

Each (method, N) runs in a fresh subprocess (its own peak RSS, a time limit); a size is skipped,
with the reason in the table, when the previous size extrapolates past the time limit or the
available memory.

Usage::

    python benchmarks/bench_scaling.py --quick
    python benchmarks/bench_scaling.py                 # N = 1e4 .. 1e6
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

NAME = "bench_scaling"
METHODS = ("eigsh-flat", "eigsh-hnsw", "sklearn", "neural", "discrete")
COLUMNS = ["method", "n", "status", "fit_s", "repeats", "peak_rss_mb", "rss_delta_mb",
           "predict_pts_per_s", "nmi", "ari"]
FULL_N = (10_000, 30_000, 100_000, 300_000, 1_000_000)
QUICK_N = (1_000, 3_000)
N_FEATURES = 384
# A single fit longer than this is not repeated: one long run already has a small spread.
REPEAT_BUDGET_S = 120.0


# ----------------------------------------------------------------------------- data
def manifold_clusters(n_samples: int, *, n_features: int = N_FEATURES, n_clusters: int = 10,
                      latent_dim: int = 6, noise: float = 0.05, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters on a curved ``latent_dim``-manifold embedded in ``n_features`` dims.

    The latent cluster centres and the embedding map depend only on ``seed``, so samples of
    any size share one distribution; rows are generated in chunks (float32 output).

    Parameters
    ----------
    n_samples : int
        Number of rows.
    n_features : int, default=384
        Ambient dimension d.
    n_clusters : int, default=10
        Number of clusters (labels 0 .. n_clusters - 1).
    latent_dim : int, default=6
        Dimension of the latent space.
    noise : float, default=0.05
        Standard deviation of the isotropic ambient noise.
    seed : int, default=0
        Seed of the distribution and of the sample.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float32
    y : ndarray of shape (n_samples,), int64
    """
    shape_rng = np.random.default_rng([seed, 0])
    centres = shape_rng.normal(size=(n_clusters, latent_dim)) * 3.0
    hidden = 64
    W1 = shape_rng.normal(size=(latent_dim, hidden)) / math.sqrt(latent_dim)
    W2 = (shape_rng.normal(size=(hidden, n_features)) / math.sqrt(hidden)).astype(np.float32)
    rng = np.random.default_rng([seed, 1])
    y = rng.integers(n_clusters, size=n_samples)
    X = np.empty((n_samples, n_features), dtype=np.float32)
    for start in range(0, n_samples, 100_000):
        stop = min(start + 100_000, n_samples)
        z = centres[y[start:stop]] + 0.8 * rng.normal(size=(stop - start, latent_dim))
        X[start:stop] = np.tanh(z @ W1).astype(np.float32) @ W2
        X[start:stop] += noise * rng.standard_normal((stop - start, n_features), np.float32)
    return X, y


def load_data(n_total: int, features: str | None, labels: str | None, seed: int):
    """``n_total`` rows of the synthetic data, or sampled from a real feature file."""
    if features is None:
        return manifold_clusters(n_total, seed=seed)
    X = np.load(features, mmap_mode="r")
    if X.ndim != 2:
        raise ValueError(f"{features} must hold a 2-D (n_samples, n_features) array, got "
                         f"shape {X.shape}")
    if n_total > X.shape[0]:
        raise ValueError(f"N = {n_total} (with the held-out points) exceeds the {X.shape[0]} "
                         f"rows of {features}; use smaller --n")
    rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], n_total, replace=False))
    y = np.load(labels)[rows] if labels else np.zeros(n_total, dtype=np.int64)
    return np.ascontiguousarray(X[rows], dtype=np.float32), y


# ----------------------------------------------------------------------------- estimators
def make_estimator(method: str, n_clusters: int, cfg: dict):
    """The estimator of ``method`` from the registry, with the benchmark's shared settings."""
    from spectralnet_seg.kernels import KNNKernel

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    kernel = KNNKernel(n_neighbors=cfg["n_neighbors"], metric="cosine", weighting="cosine",
                       index="hnsw" if method == "eigsh-hnsw" else "flat", device="cpu")
    neural = dict(kernel=kernel, batch_size=cfg["batch_size"], max_iter=cfg["max_iter"],
                  hidden_layer_sizes=tuple(cfg["hidden"]), device=cfg["device"])
    name, params = {
        "eigsh-flat": ("eigsh", dict(kernel=kernel, n_init=3)),
        "eigsh-hnsw": ("eigsh", dict(kernel=kernel, n_init=3)),
        "sklearn": ("sklearn", dict(affinity="nearest_neighbors",
                                    n_neighbors=cfg["n_neighbors"], n_init=3)),
        "neural": ("neural", dict(neural, n_init=3)),
        "discrete": ("discrete", neural),
    }[method]
    return common.build_estimator(name, n_clusters, random_state=cfg["seed"], **params)


def measure(method: str, n: int, cfg: dict) -> dict:
    """Fit ``method`` on N points (median time of repeats, peak RSS), predict, score.

    Runs in its own process when isolated; returns one table row.
    """
    import torch
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    torch.set_num_threads(cfg["threads"])
    # Disconnected-graph and convergence warnings would drown the table; results show them.
    warnings.simplefilter("ignore")
    # Every method sees the same rows: the data of N + n_test points, split.
    n_test = cfg["n_test"]
    X, y = load_data(n + n_test, cfg["features"], cfg["labels"], cfg["seed"])
    X_train, y_train, X_test = X[:n], y[:n], X[n:]
    n_clusters = cfg["n_clusters"] or len(np.unique(y_train))
    times, peak_mb, delta_mb, estimator = [], 0.0, 0.0, None
    for _ in range(cfg["repeats"]):
        estimator = make_estimator(method, n_clusters, cfg)
        with common.PeakRSS() as mem:
            tic = time.perf_counter()
            estimator.fit(X_train)
            times.append(time.perf_counter() - tic)
        peak_mb, delta_mb = max(peak_mb, mem.peak_mb), max(delta_mb, mem.delta_mb)
        if sum(times) > REPEAT_BUDGET_S:
            break
    labels = estimator.labels_
    throughput = None
    if hasattr(estimator, "predict"):  # scikit-learn's SpectralClustering has none
        predict_s, _, _ = common.median_time(lambda: estimator.predict(X_test), len(times))
        throughput = n_test / predict_s
    return {"method": method, "n": n, "status": "ok", "fit_s": float(np.median(times)),
            "repeats": len(times), "peak_rss_mb": peak_mb, "rss_delta_mb": delta_mb,
            "predict_pts_per_s": throughput,
            "nmi": normalized_mutual_info_score(y_train, labels),
            "ari": adjusted_rand_score(y_train, labels)}


# ----------------------------------------------------------------------------- schedule
def extrapolate(history: list[dict], n: int, key: str, min_slope: float) -> float | None:
    """Value of ``key`` at ``n`` on the log-log line through the last two measured sizes."""
    done = [r for r in history if r["status"] == "ok" and r.get(key)]
    if not done:
        return None
    last = done[-1]
    slope = min_slope
    if len(done) >= 2:
        prev = done[-2]
        slope = max(min_slope, math.log(last[key] / prev[key]) / math.log(last["n"] / prev["n"]))
    return last[key] * (n / last["n"]) ** slope


# Smallest growth exponent assumed when extrapolating fit time: the neural methods train a
# fixed number of steps, so only their final pass over the data grows with N.
MIN_TIME_SLOPE = {"neural": 0.0, "discrete": 0.0}


def skip_reason(history: list[dict], n: int, time_limit: float, memory_mb: float,
                min_time_slope: float = 1.0) -> str | None:
    """Why size ``n`` should not be run, judged from the smaller sizes, or None."""
    if history and history[-1]["status"].startswith("skipped"):
        return history[-1]["status"]
    if history and history[-1]["status"] != "ok":
        return f"skipped: N = {history[-1]['n']:,} did not finish"
    est_time = extrapolate(history, n, "fit_s", min_slope=min_time_slope)
    if est_time is not None and est_time > time_limit:
        return f"skipped: est. fit {est_time:.0f} s > limit {time_limit:.0f} s"
    est_mem = extrapolate(history, n, "peak_rss_mb", min_slope=1.0)
    if est_mem is not None and est_mem > memory_mb:
        return f"skipped: est. memory {est_mem / 1024:.1f} GB > {memory_mb / 1024:.1f} GB free"
    return None


def measurement_timeout(time_limit: float) -> float:
    """Seconds before a worker is stopped: one fit up to the limit, repeats while the fits
    stay under :data:`REPEAT_BUDGET_S`, the predict timing and the data generation."""
    return 2 * time_limit + 2 * REPEAT_BUDGET_S


def crossover(rows: list[dict], fast: str, slow: str) -> tuple[float | None, str]:
    """First N where ``fast`` fits faster than ``slow`` (log-log interpolation), and a note."""
    times = {m: {r["n"]: r["fit_s"] for r in rows if r["method"] == m and r["status"] == "ok"}
             for m in (fast, slow)}
    common_n = sorted(set(times[fast]) & set(times[slow]))
    if not common_n:
        return None, f"{fast} and {slow} share no measured N"
    log_ratio = [math.log(times[slow][n] / times[fast][n]) for n in common_n]
    largest = common_n[-1]
    ratio_note = (f"at the largest common N = {largest:,}, {fast} fits "
                  f"{times[slow][largest] / times[fast][largest]:.2f}x as fast as {slow}")
    if log_ratio[0] > 0:
        return common_n[0], f"{fast} is already faster at the smallest N; {ratio_note}"
    for i in range(1, len(common_n)):
        if log_ratio[i] > 0:
            a, b = math.log(common_n[i - 1]), math.log(common_n[i])
            t = -log_ratio[i - 1] / (log_ratio[i] - log_ratio[i - 1])
            n_cross = math.exp(a + t * (b - a))
            return n_cross, f"{fast} overtakes {slow} at N ~ {n_cross:,.0f}; {ratio_note}"
    return None, f"{fast} does not overtake {slow} up to N = {largest:,}; {ratio_note}"


def plot(rows: list[dict], methods) -> object:
    """Log-log fit time vs N, one line per method."""
    plt = common.plt()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method in methods:
        done = [r for r in rows if r["method"] == method and r["status"] == "ok"]
        if done:
            ax.loglog([r["n"] for r in done], [r["fit_s"] for r in done], "o-", label=method)
    ax.set_xlabel("N (training points)")
    ax.set_ylabel("fit time (s, median)")
    ax.set_title("Fit time vs N (d = 384, kNN kernel k = 10)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


# ----------------------------------------------------------------------------- main
def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=None,
                        help=f"training sizes (default {FULL_N}; {QUICK_N} with --quick)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds per fit: larger sizes that extrapolate past it are "
                             "skipped, and a worker is stopped after 2 x TIME_LIMIT + 240 s "
                             "(default 1800; 60 with --quick)")
    parser.add_argument("--n-test", type=int, default=None,
                        help="held-out points for predict throughput (default 10000; 1000 quick)")
    parser.add_argument("--n-clusters", type=int, default=10)
    parser.add_argument("--n-neighbors", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=None,
                        help="training steps of the neural methods (default 1000; 60 quick)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="minibatch of the neural methods (default 1024; 256 quick)")
    parser.add_argument("--hidden", type=int, nargs="+", default=None,
                        help="hidden widths of the neural MLP (default 256 256; 64 64 quick)")
    parser.add_argument("--device", default="auto", help="device of the neural methods")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in each worker (default: available cores)")
    parser.add_argument("--features", default=None, help="real features, .npy (n, d)")
    parser.add_argument("--labels", default=None, help="labels of --features rows, .npy (n,)")
    parser.add_argument("--isolate", choices=("yes", "no"), default=None,
                        help="one subprocess per measurement (clean memory peaks, time limit "
                             "enforced); default yes, no with --quick (faster start)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the benchmark; return ``{"rows", "notes", "files"}``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    quick = args.quick
    cfg = {
        "seed": args.seed, "repeats": common.repeats(args), "n_clusters": args.n_clusters,
        "n_neighbors": args.n_neighbors, "device": args.device,
        "n_test": args.n_test or (1_000 if quick else 10_000),
        "max_iter": args.max_iter or (30 if quick else 1000),
        "batch_size": args.batch_size or (256 if quick else 1024),
        "hidden": args.hidden or ([64, 64] if quick else [256, 256]),
        "threads": args.threads or len(os.sched_getaffinity(0)),
        "features": args.features, "labels": args.labels,
    }
    sizes = sorted(args.n or (QUICK_N if quick else FULL_N))
    time_limit = args.time_limit or (60.0 if quick else 1800.0)
    isolate = (args.isolate or ("no" if quick else "yes")) == "yes"
    info = common.machine_info()
    rows: list[dict] = []
    for method in args.methods:
        history: list[dict] = []
        for n in sizes:
            reason = skip_reason(history, n, time_limit,
                                 0.8 * common.available_memory_bytes() / 2**20,
                                 MIN_TIME_SLOPE.get(method, 1.0))
            if reason is not None:
                row = {"method": method, "n": n, "status": reason}
            else:
                status, value = common.run_isolated(
                    measure, {"method": method, "n": n, "cfg": cfg},
                    timeout=measurement_timeout(time_limit),
                    isolate=isolate)
                first_line = str(value).strip().splitlines()[0] if status != "ok" else ""
                row = value if status == "ok" else {"method": method, "n": n,
                                                    "status": f"{status}: {first_line}"[:160]}
            history.append(row)
            rows.append(row)
            print(common.text_table([row], COLUMNS).splitlines()[-1], flush=True)

    data = (f"real features {args.features}" if args.features
            else f"synthetic manifold clusters, d = {N_FEATURES}")
    notes = [f"Data: {data}, {args.n_clusters} clusters; "
             f"kernel: cosine kNN, k = {args.n_neighbors}, cosine weights. Neural methods: "
             f"{cfg['max_iter']} steps, batch {cfg['batch_size']}, MLP {cfg['hidden']}, device "
             f"{cfg['device']}. Fit times are medians of `repeats` fits (one fit when it takes "
             f"over {REPEAT_BUDGET_S:.0f} s); `peak_rss_mb` is the peak resident memory of the "
             f"process during fit (data and libraries included), `rss_delta_mb` the part "
             f"above the memory resident before fit, "
             + ("each (method, N) in a fresh subprocess. " if isolate else
                "all measured in one process (--isolate no): memory that earlier fits left "
                "allocated hides part of later peaks. ")
             + f"Predict throughput on "
             f"{cfg['n_test']:,} held-out points (Nyström extension for eigsh; scikit-learn "
             f"has no out-of-sample predict)."]
    for fast in ("neural", "discrete"):
        for slow in ("eigsh-flat", "eigsh-hnsw"):
            if fast in args.methods and slow in args.methods:
                notes.append("- " + crossover(rows, fast, slow)[1] + ".")
    print()
    print(common.text_table(rows, COLUMNS))
    print("\n".join(notes[1:]))
    out = common.output_dir(args, NAME)
    files = common.write_results(
        out, NAME, info=info, mode="quick" if quick else "full", argv=argv,
        title=__doc__.splitlines()[0],
        tables=[("", rows, COLUMNS)], notes=notes,
        figures=[(f"{NAME}.png", plot(rows, args.methods))])
    common.publish(files, args.docs_dir, NAME)
    print(f"\nwrote {', '.join(str(p) for p in files)}")
    return {"rows": rows, "notes": notes, "files": files}


if __name__ == "__main__":
    main()
