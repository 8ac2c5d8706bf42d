"""Time to eigsh's quality, fit time, memory and predict throughput vs N: eigsh vs neural.

Data: ``n_clusters`` Gaussian clusters in a low-dimensional latent space, pushed through a
fixed random two-layer tanh map into d = 384 dimensions (the ViT-S feature size) plus a
little isotropic noise — clusters on a curved low-dimensional manifold, with known labels.
``--features X.npy [--labels y.npy]`` uses real features instead (rows sampled per N).

Methods, all but ``sklearn`` on the same cosine kNN kernel (k = 10):

* ``eigsh-flat`` — :class:`~spectralnet_seg.cluster.EigshSpectralClustering` on the exact
  faiss kNN graph; out-of-sample by the Nyström extension;
* ``eigsh-hnsw`` — the same with the approximate HNSW kNN graph (the default reference);
* ``sklearn`` — scikit-learn's ``SpectralClustering(affinity="nearest_neighbors")`` on its
  own Euclidean binary 10-NN graph (no out-of-sample predict);
* ``neural`` / ``discrete`` — :class:`NeuralEigenClustering` /
  :class:`DiscreteNeuralEigenClustering`, trained on the reference's global graph until their
  label-free plateau.

Equal quality is the comparison: the reference (``--reference``, eigsh on the HNSW graph by
default) sets the NMI to reach, and each method's *time to quality* is the time of its first
result within ``--tolerance`` (0.01) of it. A neural fit is observed at its convergence checks
through its ``callback``: each check's snapshot is finished and scored, its time counted as
setup + training up to that step + the finishing, the scoring excluded — one run gives the
whole quality-vs-time curve, and the converged fit's own time and NMI.

Each (method, N) runs in a fresh subprocess (its own peak RSS, a time limit); a size is skipped,
with the reason in the table, when the previous size extrapolates past the time limit or the
available memory.

Usage::

    python benchmarks/bench_scaling.py --quick
    python benchmarks/bench_scaling.py                 # N = 1e4 .. 1e6
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

NAME = "bench_scaling"
METHODS = ("eigsh-flat", "eigsh-hnsw", "sklearn", "neural", "discrete")
NEURAL = ("neural", "discrete")
#: faiss index of each eigsh method's kNN graph (and of the neural methods' when reference).
INDEX = {"eigsh-flat": "flat", "eigsh-hnsw": "hnsw"}
COLUMNS = ["method", "n", "status", "quality", "ttq_s", "speedup", "ttq_iter", "ttq_nmi",
           "ref_nmi", "best_nmi", "fit_s", "n_iter", "nmi", "ari"]
RESOURCE_COLUMNS = ["method", "n", "status", "fit_s", "repeats", "eval_s", "peak_rss_mb",
                    "rss_delta_mb", "predict_pts_per_s"]
CURVE_COLUMNS = ["method", "n", "n_iter", "train_s", "finish_s", "time_s", "nmi"]
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
def make_estimator(method: str, n_clusters: int, cfg: dict, callback=None):
    """The estimator of ``method`` from the registry, with the benchmark's shared settings.

    The neural methods train on the global graph of the reference (``cfg["reference"]``):
    the same kernel and faiss index, so that both reach for the same eigenvectors.
    """
    from spectralnet_seg.kernels import KNNKernel

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if method in NEURAL:
        index = INDEX[cfg["reference"]]
    else:
        index = INDEX.get(method, "flat")
    kernel = KNNKernel(n_neighbors=cfg["n_neighbors"], metric="cosine", weighting="cosine",
                       index=index, device="cpu")
    neural = dict(kernel=kernel, sampler="graph", device=cfg["device"], callback=callback)
    for key in ("max_iter", "batch_size"):
        if cfg[key] is not None:
            neural[key] = cfg[key]
    if cfg["hidden"] is not None:
        neural["hidden_layer_sizes"] = tuple(cfg["hidden"])
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
    """Fit ``method`` on N points, predict, score; returns one table row.

    eigsh and scikit-learn: median fit time of repeats. Neural methods: one fit, scored at
    every convergence check through a [`CheckpointRecorder`][_common.CheckpointRecorder]
    callback (``row["curve"]``, time in seconds vs NMI); ``fit_s`` is that fit's time minus
    the callback's. Runs in its own process when isolated.
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
    recorder = None
    if method in NEURAL:
        recorder = common.CheckpointRecorder(
            lambda fitted: normalized_mutual_info_score(y_train, fitted.labels_),
            every=cfg["eval_every"])
    times, peak_mb, delta_mb, estimator = [], 0.0, 0.0, None
    for _ in range(1 if recorder is not None else cfg["repeats"]):
        estimator = make_estimator(method, n_clusters, cfg, callback=recorder)
        with common.PeakRSS() as mem:
            if recorder is not None:
                recorder.start()
            tic = time.perf_counter()
            estimator.fit(X_train)
            times.append(time.perf_counter() - tic - getattr(estimator, "callback_time_", 0.0))
        peak_mb, delta_mb = max(peak_mb, mem.peak_mb), max(delta_mb, mem.delta_mb)
        if sum(times) > REPEAT_BUDGET_S:
            break
    labels = estimator.labels_
    fit_s = float(np.median(times))
    nmi = normalized_mutual_info_score(y_train, labels)
    throughput = None
    if hasattr(estimator, "predict"):  # scikit-learn's SpectralClustering has none
        predict_s, _, _ = common.median_time(lambda: estimator.predict(X_test), len(times))
        throughput = n_test / predict_s
    if recorder is None:
        curve = [{"n_iter": None, "time_s": fit_s, "quality": nmi}]
    else:
        curve = list(recorder.points)
        if not recorder.last_call_scored:  # skipped by ``eval_every``: the fit's own result
            curve.append({"n_iter": int(estimator.n_iter_), "time_s": fit_s, "quality": nmi})
    return {"method": method, "n": n, "status": "ok", "fit_s": fit_s,
            "n_iter": getattr(estimator, "n_iter_", None),
            "eval_s": None if recorder is None else estimator.callback_time_,
            "repeats": len(times), "peak_rss_mb": peak_mb, "rss_delta_mb": delta_mb,
            "predict_pts_per_s": throughput, "nmi": nmi,
            "ari": adjusted_rand_score(y_train, labels), "curve": curve}


def add_time_to_quality(rows: list[dict], reference: str, tolerance: float) -> None:
    """Fill the time-to-quality columns of ``rows`` in place, per N, against ``reference``.

    A method reaches the reference's quality at the first point of its curve whose NMI is at
    least the reference's minus ``tolerance`` (eigsh / scikit-learn: their one fit). ``ttq_s``
    is the time of that point (setup + training to that step + the finishing a fit stopped
    there needs; callback time excluded) and ``speedup`` the reference's fit time over it.
    """
    refs = {r["n"]: r for r in rows if r["method"] == reference and r["status"] == "ok"}
    for row in rows:
        ref = refs.get(row["n"])
        if row["status"] != "ok" or ref is None:
            continue
        row["ref_nmi"] = ref["nmi"]
        row["best_nmi"] = max(p["quality"] for p in row["curve"])
        hit = common.first_reaching(row["curve"], ref["nmi"] - tolerance)
        if hit is None:
            row["quality"] = "not reached"
            continue
        row["quality"] = "reference" if row is ref else "reached"
        row["ttq_s"], row["ttq_nmi"], row["ttq_iter"] = hit["time_s"], hit["quality"], \
            hit["n_iter"]
        row["speedup"] = ref["fit_s"] / hit["time_s"]


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


# Smallest growth exponent assumed when extrapolating fit time from one size: the neural
# methods' steps (plateau stopping, fixed batch) do not grow with N; at small N they dominate
# the graph and the final pass, which do. From two sizes the measured slope is used.
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
    stay under :data:`REPEAT_BUDGET_S` (or the neural fit's evaluations at its checks, up to
    another limit), the predict timing and the data generation."""
    return 3 * time_limit + 2 * REPEAT_BUDGET_S


def crossover(rows: list[dict], fast: str, slow: str, key: str = "fit_s",
              verb: str = "fits") -> tuple[float | None, str]:
    """First N where ``fast`` has a smaller ``key`` than ``slow`` (log-log interpolation).

    Returns that N (None if never) and a note; sizes where either lacks ``key`` (e.g. a
    time to quality not reached) are left out.
    """
    times = {m: {r["n"]: r[key] for r in rows
                 if r["method"] == m and r["status"] == "ok" and r.get(key)}
             for m in (fast, slow)}
    common_n = sorted(set(times[fast]) & set(times[slow]))
    if not common_n:
        return None, f"{fast} and {slow} share no measured N"
    log_ratio = [math.log(times[slow][n] / times[fast][n]) for n in common_n]
    largest = common_n[-1]
    ratio_note = (f"at the largest common N = {largest:,}, {fast} {verb} "
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
    """Log-log time vs N: time to the reference quality (solid) and final fit (dashed)."""
    plt = common.plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, method in enumerate(methods):
        color = f"C{i}"
        done = [r for r in rows if r["method"] == method and r["status"] == "ok"]
        reached = [r for r in done if r.get("ttq_s")]
        if reached:
            ax.loglog([r["n"] for r in reached], [r["ttq_s"] for r in reached], "o-",
                      color=color, label=f"{method}: to quality")
        if method in NEURAL and done:
            ax.loglog([r["n"] for r in done], [r["fit_s"] for r in done], "x--", color=color,
                      alpha=0.7, label=f"{method}: converged fit")
    ax.set_xlabel("N (training points)")
    ax.set_ylabel("seconds")
    ax.set_title("Time to the reference's NMI − 0.01, and fit time, vs N")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_curves(rows: list[dict], methods, reference: str, tolerance: float) -> object:
    """NMI vs time of each neural fit (its checks), eigsh and scikit-learn as points; one
    panel per N."""
    plt = common.plt()
    sizes = sorted({r["n"] for r in rows if r["status"] == "ok"})
    fig, axes = plt.subplots(1, max(len(sizes), 1), figsize=(3.6 * max(len(sizes), 1), 3.4),
                             squeeze=False)
    for ax, n in zip(axes[0], sizes, strict=False):
        for i, method in enumerate(methods):
            row = next((r for r in rows if r["method"] == method and r["n"] == n
                        and r["status"] == "ok"), None)
            if row is None:
                continue
            times = [p["time_s"] for p in row["curve"]]
            quality = [p["quality"] for p in row["curve"]]
            if method in NEURAL:
                ax.semilogx(times, quality, ".-", color=f"C{i}", label=method)
            else:
                ax.semilogx(times, quality, "*" if method == reference else "o",
                            color=f"C{i}", ms=11 if method == reference else 6, label=method)
            if method == reference:
                ax.axhline(row["nmi"] - tolerance, color="grey", lw=0.8, ls="--")
        ax.set_title(f"N = {n:,}")
        ax.set_xlabel("seconds (callback time excluded)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("NMI")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"Quality vs time; dashed: {reference}'s NMI − {tolerance}")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- main
def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=None,
                        help=f"training sizes (default {FULL_N}; {QUICK_N} with --quick)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--reference", choices=("eigsh-hnsw", "eigsh-flat"),
                        default="eigsh-hnsw",
                        help="the method whose NMI defines the quality to reach; the neural "
                             "methods train on its graph (same kernel and faiss index); run "
                             "first, added to --methods if missing (default eigsh-hnsw)")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="quality reached at NMI >= reference NMI - TOLERANCE (0.01)")
    parser.add_argument("--eval-every", type=int, default=1,
                        help="score the neural fits at one convergence check in EVAL_EVERY "
                             "(default 1: every check, 100 steps apart)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds per fit: larger sizes that extrapolate past it are "
                             "skipped, and a worker is stopped after 3 x TIME_LIMIT + 240 s "
                             "(default 1800; 60 with --quick)")
    parser.add_argument("--n-test", type=int, default=None,
                        help="held-out points for predict throughput (default 10000; 1000 quick)")
    parser.add_argument("--n-clusters", type=int, default=10)
    parser.add_argument("--n-neighbors", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=None,
                        help="cap on the training steps of the neural methods, which stop "
                             "at their plateau (default: the estimators' 5000)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="pairs per step of the neural methods (default: the "
                             "estimators' 'auto')")
    parser.add_argument("--hidden", type=int, nargs="+", default=None,
                        help="hidden widths of the neural MLP (default: the estimators' "
                             "128 128; 64 64 with --quick)")
    parser.add_argument("--device", default="auto", help="device of the neural methods")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in each worker (default: OMP_NUM_THREADS, else the "
                             "available cores)")
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
        "n_neighbors": args.n_neighbors, "device": args.device, "reference": args.reference,
        "n_test": args.n_test or (1_000 if quick else 10_000),
        "max_iter": args.max_iter, "batch_size": args.batch_size,
        "hidden": args.hidden or ([64, 64] if quick else None),
        "eval_every": args.eval_every,
        "threads": common.default_threads(args.threads),
        "features": args.features, "labels": args.labels,
    }
    # The reference first: each later row gets its time to quality as soon as it is measured.
    methods = [args.reference, *(m for m in args.methods if m != args.reference)]
    sizes = sorted(args.n or (QUICK_N if quick else FULL_N))
    time_limit = args.time_limit or (60.0 if quick else 1800.0)
    isolate = (args.isolate or ("no" if quick else "yes")) == "yes"
    info = common.machine_info()
    rows: list[dict] = []
    for method in methods:
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
            add_time_to_quality(rows, args.reference, args.tolerance)
            print(common.text_table([row], COLUMNS).splitlines()[-1], flush=True)

    notes = [protocol_note(args, cfg, isolate)]
    notes += headline(rows, methods, args.reference, args.tolerance)
    for fast in NEURAL:
        if fast in methods:
            notes.append("- " + crossover(rows, fast, args.reference, key="ttq_s",
                                          verb="reaches the quality")[1] + ".")
    print()
    print(common.text_table(rows, COLUMNS))
    print("\n".join(notes[1:]))
    out = common.output_dir(args, NAME)
    files = common.write_results(
        out, NAME, info=info, mode="quick" if quick else "full", argv=argv,
        title=__doc__.splitlines()[0],
        tables=[("", rows, COLUMNS), ("_resources", rows, RESOURCE_COLUMNS)], notes=notes,
        figures=[(f"{NAME}.png", plot(rows, methods)),
                 (f"{NAME}_curves.png", plot_curves(rows, methods, args.reference,
                                                    args.tolerance))])
    curves = out / f"{NAME}_curves.csv"
    common.write_csv(curves, curve_rows(rows), CURVE_COLUMNS)
    files.insert(0, curves)
    common.publish(files, args.docs_dir, NAME, quick=args.quick)
    print(f"\nwrote {', '.join(str(p) for p in files)}")
    return {"rows": rows, "notes": notes, "files": files}


def curve_rows(rows: list[dict]) -> list[dict]:
    """One row per scored point of every fit (eigsh and scikit-learn: their one fit)."""
    return [{"method": r["method"], "n": r["n"], **{k: p.get(k) for k in CURVE_COLUMNS[2:]},
             "nmi": p["quality"]}
            for r in rows if r["status"] == "ok" for p in r["curve"]]


def protocol_note(args, cfg: dict, isolate: bool) -> str:
    """The paragraph that states how the table was measured."""
    data = (f"real features {args.features}" if args.features
            else f"synthetic manifold clusters, d = {N_FEATURES}")
    neural = ", ".join(f"{key} {cfg[key]}" for key in ("max_iter", "batch_size", "hidden")
                       if cfg[key] is not None) or "the estimators' defaults"
    return (
        f"Data: {data}, {args.n_clusters} clusters; kernel: cosine kNN, k = "
        f"{args.n_neighbors}, cosine weights. **Time to quality**: the reference is "
        f"{args.reference}; a method reaches its quality when its NMI is at least the "
        f"reference's minus {args.tolerance}. The neural methods train on the reference's "
        f"global graph (same kernel and faiss index, `sampler=\"graph\"`) until their "
        f"label-free plateau ({neural}; device {cfg['device']}); one fit each, with a "
        f"callback that finishes a snapshot at every "
        + ("" if cfg["eval_every"] == 1 else f"{cfg['eval_every']}-th ")
        + "convergence check (every 100 steps) and at the end of training and scores its "
        "labels. `ttq_s` is the time of the first check that reaches the quality: setup and "
        "graph, training up to that step (`ttq_iter`), and the finishing a fit stopped there "
        "does (embedding, Rayleigh–Ritz, k-means; for `discrete` the k-means start and the "
        "fine-tuning); the scoring and the other checks' snapshots are excluded (`eval_s` "
        "in total). k-means restarts: `n_init` = 3 for eigsh, scikit-learn and neural (their "
        "default is 10), the default for discrete. eigsh and scikit-learn reach it with their "
        "fit (`ttq_s` = `fit_s`, a "
        f"median of `repeats` fits, one when it takes over {REPEAT_BUDGET_S:.0f} s). "
        f"`speedup` = the reference's `fit_s` / `ttq_s`, in this one run; `fit_s`, `nmi` "
        "of the neural methods are those of the converged fit (callback time subtracted). "
        "`peak_rss_mb` is the peak resident memory of the process during fit (data, "
        "libraries and, for the neural methods, the snapshots included), `rss_delta_mb` the "
        "part above the memory resident before fit, "
        + ("each (method, N) in a fresh subprocess. " if isolate else
           "all measured in one process (--isolate no): memory that earlier fits left "
           "allocated hides part of later peaks. ")
        + f"Predict throughput on {cfg['n_test']:,} held-out points (Nyström extension "
        "for eigsh; scikit-learn has no out-of-sample predict). The quality-vs-time curves "
        f"are in `{NAME}_curves.csv` and the second figure.")


def headline(rows: list[dict], methods, reference: str, tolerance: float) -> list[str]:
    """One line per (neural method, N): its time at equal quality vs the reference's."""
    lines = []
    for method in (m for m in methods if m in NEURAL):
        for row in rows:
            if row["method"] != method or row["status"] != "ok" or "quality" not in row:
                continue
            ref = next(r for r in rows if r["method"] == reference and r["n"] == row["n"])
            head = (f"- N = {row['n']:,}, {method}: ")
            tail = (f" (converged fit: {row['fit_s']:.3g} s, {row['n_iter']} steps, NMI "
                    f"{row['nmi']:.3f})")
            if row["quality"] == "not reached":
                lines.append(head + f"**not reached** — best NMI {row['best_nmi']:.3f} < "
                             f"{reference}'s {ref['nmi']:.3f} − {tolerance}" + tail + ".")
            else:
                lines.append(head + f"NMI {row['ttq_nmi']:.3f} (≥ {reference}'s "
                             f"{ref['nmi']:.3f} − {tolerance}) after {row['ttq_s']:.3g} s at "
                             f"step {row['ttq_iter']}, vs {ref['fit_s']:.3g} s for "
                             f"{reference}: **{row['speedup']:.2f}x** as fast" + tail + ".")
    return lines


if __name__ == "__main__":
    main()
