"""Every estimator with its defaults only, on data nobody tuned them for.

Each estimator gets ``n_clusters`` (the number of classes) and ``random_state`` and nothing
else — no kernel, no training setting — as a user without labels would run it:

* ``eigsh`` — :class:`~spectralnet_seg.cluster.EigshSpectralClustering`;
* ``neural`` / ``discrete`` — :class:`~spectralnet_seg.cluster.NeuralEigenClustering` /
  :class:`~spectralnet_seg.cluster.DiscreteNeuralEigenClustering` (the same default kernel
  as eigsh: scikit-learn's 10-NN connectivity graph);
* ``sklearn`` — scikit-learn's ``SpectralClustering(affinity="nearest_neighbors")``;
* ``kmeans`` — scikit-learn's ``KMeans`` on the features;
* ``spectralnet`` — SpectralNet 1.1.0 (pip ``spectralnet``, Shaham et al. 2018) with its
  defaults (``spectral_hiddens`` ending in ``n_clusters``, which its API requires), when it
  is installed (``pip install -e ".[peers]"``); never a test dependency.

Data: digits; two moons and two circles (600 points, noise 0.05); four blobs of unequal
spread; iris, wine and breast_cancer (standardised); ``manifold_clusters`` (N = 2·10⁴, the
scaling benchmark's data); and the demo's texture mosaics as plain token features
(:class:`~spectralnet_seg.features.PixelExtractor` tokens of 8 mosaics, each labelled by
the texture at its centre). Every (data, method) runs with ``--seeds`` seeds; the table
reports the mean NMI and ARI, the spread (max − min NMI) over seeds, the mean and the slowest
fit time, and the NMI as a ratio to eigsh's.

Usage::

    python benchmarks/bench_defaults.py --quick
    python benchmarks/bench_defaults.py
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
import bench_peers as peers  # noqa: E402

NAME = "bench_defaults"
COLUMNS = ["data", "n", "method", "seeds", "nmi", "nmi_min", "nmi_spread", "ari",
           "nmi_vs_eigsh", "fit_s", "fit_s_max", "status"]
FULL_DATA = ("digits", "moons", "circles", "blobs", "iris", "wine", "breast_cancer",
             "manifold", "mosaics")
QUICK_DATA = ("moons", "iris")
METHODS = ("eigsh", "neural", "discrete", "sklearn", "kmeans", "spectralnet")
#: SpectralNet's fits on the 2·10⁴-point set are the slowest of the table: one seed above this.
SLOW_PEER_MAX_N = 5000


# ----------------------------------------------------------------------------- data
def _mosaic_tokens(seed: int):
    from spectralnet_seg.datasets import TextureMosaics
    from spectralnet_seg.features import PixelExtractor

    mosaics = TextureMosaics(8, image_size=96, seed=seed)
    extracted = PixelExtractor().extract(mosaics.images())
    return extracted.flatten(), common.token_classes(mosaics.masks(), extracted.grid_shape)


def load(name: str, *, quick: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a data set (standardised where the issue says so)."""
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    n_points = 300 if quick else 600
    if name == "digits":
        X, y = datasets.load_digits(return_X_y=True)
    elif name == "moons":
        X, y = datasets.make_moons(n_points, noise=0.05, random_state=0)
    elif name == "circles":
        X, y = datasets.make_circles(n_points, noise=0.05, factor=0.5, random_state=0)
    elif name == "blobs":
        X, y = datasets.make_blobs(1000, centers=4, cluster_std=[0.5, 1.0, 2.0, 0.3],
                                   random_state=0)
    elif name in ("iris", "wine", "breast_cancer"):
        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        X = StandardScaler().fit_transform(X)
    elif name == "manifold":
        from bench_scaling import manifold_clusters

        X, y = manifold_clusters(20_000, seed=0)
    elif name == "mosaics":
        X, y = _mosaic_tokens(seed=0)
    else:
        raise ValueError(f"unknown data set {name!r}; choose from {FULL_DATA}")
    return np.asarray(X, dtype=np.float32), np.asarray(y)


# ----------------------------------------------------------------------------- methods
def _kmeans(X, k, seed):
    from sklearn.cluster import KMeans

    return KMeans(k, random_state=seed).fit_predict(X)


#: Rows shared with bench_peers, by the name they have there: one fit function (and one
#: SpectralNet set-up) and one availability check for both benchmarks.
PEER_ROWS = {"eigsh": "eigsh", "neural": "neural", "discrete": "discrete",
             "sklearn": "sklearn arpack", "spectralnet": "spectralnet"}


def fit_labels(method: str, X: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Labels of ``method`` with its defaults (``n_clusters`` and ``random_state`` only)."""
    if method == "kmeans":
        return _kmeans(X, k, seed)
    return peers.METHODS[PEER_ROWS[method]].fit(X, k, seed, None)


def unavailable(method: str) -> str | None:
    """Why ``method`` cannot run here (e.g. SpectralNet not installed), or None."""
    return None if method == "kmeans" else peers.unavailable(PEER_ROWS[method])


# ----------------------------------------------------------------------------- running
def run(data: list[str], methods: list[str], seeds: list[int], *, quick: bool) -> list[dict]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rows = []
    for name in data:
        X, y = load(name, quick=quick)
        k = len(np.unique(y))
        for method in methods:
            row = {"data": name, "n": len(X), "method": method, "seeds": len(seeds)}
            reason = unavailable(method)
            if reason:
                rows.append({**row, "seeds": 0, "status": reason})
                continue
            method_seeds = seeds[:1] if method == "spectralnet" and len(X) > SLOW_PEER_MAX_N \
                else seeds
            row["seeds"] = len(method_seeds)
            nmis, aris, times = [], [], []
            for seed in method_seeds:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # disconnected graphs, convergence
                    tic = time.perf_counter()
                    labels = fit_labels(method, X, k, seed)
                    times.append(time.perf_counter() - tic)
                nmis.append(normalized_mutual_info_score(y, labels))
                aris.append(adjusted_rand_score(y, labels))
            row.update(nmi=float(np.mean(nmis)), nmi_min=float(np.min(nmis)),
                       nmi_spread=float(np.max(nmis) - np.min(nmis)),
                       ari=float(np.mean(aris)), fit_s=float(np.mean(times)),
                       fit_s_max=float(np.max(times)), status="ok")
            rows.append(row)
            print(f"  {name:<14s} {method:<12s} NMI {row['nmi']:.3f} (spread "
                  f"{row['nmi_spread']:.3f})  ARI {row['ari']:.3f}  {row['fit_s']:6.1f} s",
                  flush=True)
    eigsh = {r["data"]: r["nmi"] for r in rows if r["method"] == "eigsh" and "nmi" in r}
    for row in rows:
        if "nmi" in row and eigsh.get(row["data"]):
            row["nmi_vs_eigsh"] = row["nmi"] / eigsh[row["data"]]
    return rows


def verdict(rows: list[dict]) -> list[str]:
    """Issue 10's bars, one line each, from the rows of this run."""
    by = {(r["data"], r["method"]): r for r in rows if "nmi" in r}
    lines = []

    def check(ok: bool, text: str) -> None:
        lines.append(f"- {'met' if ok else '**not met**'}: {text}")

    for data in sorted({r["data"] for r in rows}):
        eigsh = by.get((data, "eigsh"))
        for method, bar in (("neural", 0.97), ("discrete", 0.95)):
            row = by.get((data, method))
            if eigsh and row:
                check(row["nmi_vs_eigsh"] >= bar, f"{data}: {method} NMI {row['nmi']:.3f} = "
                      f"{row['nmi_vs_eigsh']:.3f} x eigsh's {eigsh['nmi']:.3f} (bar {bar})")
        sk = by.get((data, "sklearn"))
        if eigsh and sk:
            check(eigsh["nmi"] >= sk["nmi"] - 0.02, f"{data}: eigsh NMI {eigsh['nmi']:.3f} vs "
                  f"scikit-learn's {sk['nmi']:.3f} (bar: no more than 0.02 below)")
        peer = by.get((data, "spectralnet"))
        for method in ("neural", "discrete"):
            row = by.get((data, method))
            if peer and row:
                check(row["nmi"] >= peer["nmi"], f"{data}: {method} NMI {row['nmi']:.3f} vs "
                      f"SpectralNet's {peer['nmi']:.3f}")
        if data in ("moons", "circles"):
            for method in ("neural", "discrete"):
                row = by.get((data, method))
                if row:
                    check(row["ari"] >= 0.95, f"{data}: {method} ARI {row['ari']:.3f} "
                                              "(bar 0.95)")
    for method in ("neural", "discrete"):
        row = by.get(("digits", method))
        if row and row["seeds"] >= 5:
            check(row["nmi_spread"] <= 0.02, f"digits: {method} NMI spread over "
                  f"{row['seeds']} seeds {row['nmi_spread']:.3f} (bar 0.02)")
        if row:  # every seed, not only their mean: a user runs one seed
            check(row["fit_s_max"] <= 15.0, f"digits: {method} fit {row['fit_s']:.1f} s "
                  f"(slowest of {row['seeds']} seeds {row['fit_s_max']:.1f} s) with defaults "
                  "(bar 15 s on 2 cores, every seed)")
    return lines


def plot(rows: list[dict]):
    plt = common.plt()
    data = list(dict.fromkeys(r["data"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows if "nmi" in r))
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(data), 3.8))
    width = 0.8 / max(len(methods), 1)
    by = {(r["data"], r["method"]): r for r in rows if "nmi" in r}
    for j, method in enumerate(methods):
        values = [by[(d, method)]["nmi"] if (d, method) in by else np.nan for d in data]
        ax.bar(np.arange(len(data)) + (j - (len(methods) - 1) / 2) * width, values, width,
               label=method)
    ax.set_xticks(np.arange(len(data)), data, rotation=20)
    ax.set_ylabel("NMI (mean over seeds)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=len(methods), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.set_title("Every estimator with its defaults", pad=24)
    fig.tight_layout()
    return fig


def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=None, choices=FULL_DATA,
                        help=f"data sets (default: all; {list(QUICK_DATA)} with --quick)")
    parser.add_argument("--methods", nargs="+", default=None, choices=METHODS,
                        help="rows to run (default: all; spectralnet when installed)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="random_state 0 .. SEEDS-1 (default 5; 1 with --quick)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the benchmark; return ``{"rows", "files"}``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    data = args.data or list(QUICK_DATA if args.quick else FULL_DATA)
    methods = args.methods or list(METHODS)
    seeds = list(range(args.seeds or (1 if args.quick else 5)))
    info = common.machine_info()
    rows = run(data, methods, seeds, quick=args.quick)
    print()
    print(common.text_table(rows, COLUMNS))
    checks = verdict(rows)
    print("\n".join(checks))
    notes = [
        "Every estimator with `n_clusters` (the number of classes) and `random_state` only. "
        "`nmi`, `ari`, `fit_s`: means over the seeds; `fit_s_max`: the slowest seed's fit; "
        "`nmi_spread`: max − min NMI over them; "
        "`nmi_vs_eigsh`: mean NMI over eigsh's. `spectralnet`: SpectralNet 1.1.0 with "
        "`spectral_hiddens=[1024, 1024, 512, n_clusters]`, its defaults otherwise; one seed "
        f"on data of more than {SLOW_PEER_MAX_N} points (its slowest fits); its `fit_s` "
        "includes one `predict` on the training data, which gives its labels (4 % of the "
        "fit on digits).",
        "### Issue 10's bars in this run", *checks]
    out = common.output_dir(args, NAME)
    files = common.write_results(
        out, NAME, info=info, mode="quick" if args.quick else "full", argv=argv,
        title=__doc__.splitlines()[0], tables=[("", rows, COLUMNS)], notes=notes,
        figures=[(f"{NAME}.png", plot(rows))])
    common.publish(files, args.docs_dir, NAME, quick=args.quick)
    print(f"\nwrote {', '.join(str(p) for p in files)}")
    return {"rows": rows, "files": files}


if __name__ == "__main__":
    main()
