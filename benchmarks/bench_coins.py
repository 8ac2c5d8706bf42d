"""scikit-learn's coin segmentation: eigsh, the neural estimators and scikit-learn on one pixel graph.

The graph of scikit-learn's example ``plot_coin_segmentation.py``: ``skimage.data.coins()``
smoothed (Gaussian, σ = 2), rescaled (20 %, or kept at full resolution, 303 × 384), turned
into a 4-neighbour pixel graph by :func:`sklearn.feature_extraction.image.img_to_graph`,
weighted ``exp(-β · gradient / std) + 1e-6`` (β = 10), without its self-loops so that every
method decomposes the very same operator. Each method partitions it into 25 regions:

* ``sklearn <solver>`` — :func:`sklearn.cluster.spectral_clustering` (k-means on the
  degree-normalised eigenvectors);
* ``eigsh <solver>`` — :class:`~spectralnet_seg.cluster.EigshSpectralClustering` with
  ``kernel="precomputed"`` and ``embedding_norm="degree"`` (the same algorithm);
* ``eigsh arpack row`` — the same with ``embedding_norm="row"`` (unit-norm rows, Ng, Jordan
  & Weiss), for comparison: the estimator's default is ``"degree"``, so ``eigsh arpack`` is
  the row a user gets with ``EigshSpectralClustering(kernel="precomputed")``, and its ARPACK
  runs in the mode the estimator picks itself (shift-invert on this nearly planar pixel grid,
  see ``spectralnet_seg/cluster/_eigensolvers.py``);
* ``neural`` / ``discrete`` —
  :class:`~spectralnet_seg.cluster.NeuralEigenClustering` and
  :class:`~spectralnet_seg.cluster.DiscreteNeuralEigenClustering` with their defaults, fitted
  as ``fit(features, graph=W)`` on the same graph. ``features`` is what a user of a pixel
  graph has at hand: each pixel's (smoothed) intensity and its row and column scaled to
  [0, 1], shape ``(h * w, 3)``; the network learns its eigenfunctions as functions of those,
  the graph supplies the affinities. They run only at scales up to
  ``--neural-max-scale`` (default 0.2): on 2 CPU cores the discrete estimator takes minutes
  on the 20 % graph already, and the full-resolution graph has 25 times more pixels.

for ``<solver>`` in arpack, amg (pyamg) and lobpcg. Reported: the normalised cut of the
partition on the graph (:func:`spectralnet_seg.metrics.normalized_cut`, lower is better), the
number of regions the partition uses (of the 25 asked for), the fit time (median of repeats)
and the peak memory of the fit; the time and the normalised cut also as ratios to
scikit-learn with the same solver, and for the neural rows the normalised cut as a ratio to
``eigsh arpack`` (issue 10's bar: normalised cut within 1.5x of
eigsh's on the 20 % graph, all 25 regions used). Every fit runs in a fresh subprocess (own
peak memory, no warm caches, a time limit); repeats are interleaved across methods so that
load on a shared machine hits them alike.

``METHODS`` maps a row name to ``fn(data, n_regions, seed) -> labels``: to add an estimator,
add an entry (``data.features`` holds each pixel's intensity and normalised position,
``data.graph`` the pixel graph).

Usage::

    python benchmarks/bench_coins.py --quick
    python benchmarks/bench_coins.py
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

NAME = "bench_coins"
COLUMNS = ["scale", "n_pixels", "method", "status", "ncut", "regions", "ncut_vs_sklearn",
           "ncut_vs_eigsh", "fit_s", "time_vs_sklearn", "fit_mem_mb", "peak_rss_mb", "repeats",
           "times_s"]
FULL_SCALES = (0.2, 1.0)
QUICK_SCALES = (0.1, 0.2)
BETA, EPS, N_REGIONS = 10.0, 1e-6, 25
SLOW_FIT_S = 120.0  # a fit longer than this is not repeated
NEURAL_MAX_SCALE = 0.2  # the neural rows are skipped on larger graphs (minutes on 2 cores)
ISSUE_10_NCUT_BAR = 1.5  # neural Ncut within 1.5x eigsh's on the 20 % graph, all regions used


# ----------------------------------------------------------------------------- data
@dataclass
class CoinsData:
    """The coins image at one scale, its pixel graph and per-pixel features."""

    image: np.ndarray  # (h, w) float in [0, 1]
    graph: object  # scipy.sparse.csr_matrix (h*w, h*w), symmetric, no self-loops
    features: np.ndarray  # (h*w, 3) float32: intensity, y, x (positions in [0, 1])


def coins_data(scale: float) -> CoinsData:
    """scikit-learn's coin-segmentation graph at ``scale`` (1.0 = full resolution)."""
    import scipy.sparse as sp
    from scipy.ndimage import gaussian_filter
    from skimage.data import coins
    from skimage.transform import rescale
    from sklearn.feature_extraction.image import img_to_graph

    smoothed = gaussian_filter(coins(), sigma=2)
    image = rescale(smoothed, scale, mode="reflect", anti_aliasing=False)  # float, [0, 1]
    graph = img_to_graph(image)
    graph.data = np.exp(-BETA * graph.data / graph.data.std()) + EPS
    graph = sp.csr_matrix(graph)
    graph.setdiag(0)  # scikit-learn ignores self-loops in its Laplacian; drop them for all
    graph.eliminate_zeros()
    h, w = image.shape
    ys, xs = np.meshgrid(np.arange(h) / max(h - 1, 1), np.arange(w) / max(w - 1, 1),
                         indexing="ij")
    features = np.stack([image.ravel(), ys.ravel(), xs.ravel()], axis=1).astype(np.float32)
    return CoinsData(image, graph, features)


# ----------------------------------------------------------------------------- methods
def _sklearn(data: CoinsData, n_regions: int, seed: int, *, solver: str) -> np.ndarray:
    from sklearn.cluster import spectral_clustering

    return spectral_clustering(data.graph, n_clusters=n_regions, eigen_solver=solver,
                               random_state=seed)


def _eigsh(data: CoinsData, n_regions: int, seed: int, *, solver: str,
           embedding_norm: str = "degree") -> np.ndarray:
    from spectralnet_seg.cluster import EigshSpectralClustering

    estimator = EigshSpectralClustering(n_regions, kernel="precomputed", eigen_solver=solver,
                                        embedding_norm=embedding_norm, random_state=seed)
    return estimator.fit(data.graph).labels_


def _neural(data: CoinsData, n_regions: int, seed: int, *, method: str,
            **params) -> np.ndarray:
    """A neural estimator with its defaults, learning from the pixel features on the graph."""
    from spectralnet_seg.cluster import make_estimator

    estimator = make_estimator(method, n_regions, random_state=seed, **params)
    return estimator.fit(data.features, graph=data.graph).labels_


def _method(fn, **params) -> Callable[[CoinsData, int, int], np.ndarray]:
    return lambda data, n_regions, seed: fn(data, n_regions, seed, **params)


SOLVERS = ("arpack", "amg", "lobpcg")
METHODS: dict[str, Callable[[CoinsData, int, int], np.ndarray]] = {
    **{f"sklearn {s}": _method(_sklearn, solver=s) for s in SOLVERS},
    **{f"eigsh {s}": _method(_eigsh, solver=s) for s in SOLVERS},
    "eigsh arpack row": _method(_eigsh, solver="arpack", embedding_norm="row"),
    "neural": _method(_neural, method="neural"),
    "discrete": _method(_neural, method="discrete"),
}
NEURAL_METHODS = ("neural", "discrete")
# Warm-up fits (imports, thread pools) before the timed one; the neural ones would otherwise
# train for their full default iterations on the tiny warm-up graph.
WARMUPS = {m: _method(_neural, method=m, max_iter=10) for m in NEURAL_METHODS}


def quick_methods() -> list[str]:
    """All rows but LOBPCG (over a minute on the 10 % graph) and the discrete estimator
    (minutes)."""
    return [m for m in METHODS if "lobpcg" not in m and m != "discrete"]


def reference_of(method: str) -> str | None:
    """The scikit-learn row a method is compared with (same solver), or None."""
    if method.startswith("sklearn"):
        return None
    solver = next((s for s in SOLVERS if s in method.split()), None)
    return f"sklearn {solver}" if solver else None


# ----------------------------------------------------------------------------- measuring
def measure_fit(scale: float, method: str, n_regions: int, seed: int,
                threads: int | None = None) -> dict:
    """One fit of ``method`` on the coins graph at ``scale`` (runs in its own process).

    ``threads`` caps the BLAS/OpenMP threads (threadpoolctl): LOBPCG's many small dense
    products slowed 20x when 2 BLAS threads shared 2 busy cores.
    """
    from threadpoolctl import threadpool_limits

    from spectralnet_seg.metrics import normalized_cut

    data = coins_data(scale)
    fit = METHODS[method]
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LOBPCG/AMG chatter; failures still raise
        WARMUPS.get(method, fit)(coins_data(0.05), 3, seed)  # lazy imports, thread pools
        with common.PeakRSS() as mem:
            tic = time.perf_counter()
            labels = fit(data, n_regions, seed)
            fit_s = time.perf_counter() - tic
    labels = np.asarray(labels)
    return {"fit_s": fit_s, "peak_rss_mb": mem.peak_mb, "fit_mem_mb": mem.delta_mb,
            "ncut": normalized_cut(data.graph, labels), "regions": len(np.unique(labels)), "labels": labels.astype(np.int16),
            "shape": data.image.shape}


def run_scale(scale: float, methods: list[str], cfg: dict) -> tuple[list[dict], dict]:
    """Interleaved repeats of every method at one scale; rows and label maps."""
    results = {m: {"times": [], "failures": []} for m in methods}
    for round_ in range(cfg["repeats"]):
        order = methods[round_ % len(methods):] + methods[:round_ % len(methods)]
        for method in order:
            res = results[method]
            if res["failures"] or (res["times"] and max(res["times"]) > SLOW_FIT_S):
                continue  # failed once, or too slow to repeat
            status, value = common.run_isolated(
                measure_fit, dict(scale=scale, method=method, n_regions=cfg["n_regions"],
                                  seed=cfg["seed"], threads=cfg["threads"]),
                timeout=cfg["time_limit"], isolate=cfg["isolate"])
            if status != "ok":
                res["failures"].append(f"{status}: {str(value).splitlines()[0]}"[:100])
                print(f"  {scale:g} {method:<18s} {res['failures'][-1]}", flush=True)
                continue
            res["times"].append(value["fit_s"])
            res.setdefault("ncuts", []).append(value["ncut"])
            res.setdefault("regions", []).append(value["regions"])
            res["labels"], res["shape"] = value["labels"], value["shape"]
            res["peak_rss_mb"] = max(res.get("peak_rss_mb", 0.0), value["peak_rss_mb"])
            res["fit_mem_mb"] = max(res.get("fit_mem_mb", 0.0), value["fit_mem_mb"])
            print(f"  {scale:g} {method:<18s} {value['fit_s']:8.2f} s  ncut "
                  f"{value['ncut']:.4f}", flush=True)
    rows, label_maps = [], {}
    for method in methods:
        res = results[method]
        failures = res["failures"]
        row = {"scale": scale, "method": method, "status": failures[0] if failures else "ok"}
        if res["times"]:
            # A run that failed after others succeeded stays visible in the status.
            status = (f"ok in {len(res['times'])} run(s), then {failures[0]}" if failures
                      else "ok")
            # scikit-learn's amg varies from run to run (pyamg's unseeded draws): median.
            row.update(status=status, ncut=float(np.median(res["ncuts"])),
                       regions=int(np.median(res["regions"])),
                       fit_s=float(np.median(res["times"])),
                       repeats=len(res["times"]), peak_rss_mb=res["peak_rss_mb"],
                       fit_mem_mb=res["fit_mem_mb"],
                       times_s=" ".join(f"{t:.2f}" for t in res["times"]),
                       n_pixels=int(np.prod(res["shape"])))
            label_maps[method] = res["labels"].reshape(res["shape"])
        rows.append(row)
    by_method = {r["method"]: r for r in rows}
    for row in rows:
        ref = by_method.get(reference_of(row["method"]) or "")
        if ref and "fit_s" in ref and "fit_s" in row:
            row["time_vs_sklearn"] = row["fit_s"] / ref["fit_s"]
            row["ncut_vs_sklearn"] = row["ncut"] / ref["ncut"]
    eigsh = by_method.get("eigsh arpack", {})
    for row in rows:
        if row["method"] in NEURAL_METHODS and "ncut" in row and "ncut" in eigsh:
            row["ncut_vs_eigsh"] = row["ncut"] / eigsh["ncut"]
    return rows, label_maps


# ----------------------------------------------------------------------------- output
def plot(images: dict, label_maps: dict, rows: list[dict]):
    """The partitions side by side: one row of panels per scale, one panel per method."""
    from spectralnet_seg.plotting import label_overlay

    plt = common.plt()
    scales = list(label_maps)
    n_cols = max(len(m) for m in label_maps.values()) if label_maps else 1
    fig, axes = plt.subplots(len(scales), n_cols, figsize=(2.6 * n_cols, 2.9 * len(scales)),
                             squeeze=False, layout="constrained")
    by_key = {(r["scale"], r["method"]): r for r in rows}
    for i, scale in enumerate(scales):
        grey = (np.repeat(images[scale][..., None], 3, axis=2) * 255).astype(np.uint8)
        for j in range(n_cols):
            ax = axes[i, j]
            ax.axis("off")
            if j >= len(label_maps[scale]):
                continue
            method, labels = list(label_maps[scale].items())[j]
            # Region outlines help at full resolution but swamp a 61 x 77 picture.
            ax.imshow(label_overlay(grey, labels.astype(np.int64), alpha=0.45,
                                    boundaries=min(labels.shape) > 150))
            row = by_key[scale, method]
            ax.set_title(f"{method} ({scale:g})\nNcut {row['ncut']:.4f}, "
                         f"{row['fit_s']:.1f} s", fontsize=7)
    fig.suptitle(f"coins, {N_REGIONS} regions: partitions of the same pixel graph")
    return fig


def verdict(rows: list[dict], n_regions: int) -> list[str]:
    """The issues' bars: eigsh at full resolution within 1.2x scikit-learn's time and 1.1x its
    Ncut; the neural rows on the 20 % graph within 1.5x eigsh's Ncut with every region used."""
    lines = []
    for row in rows:
        if row["scale"] != 1.0 or row["method"] not in ("eigsh arpack", "eigsh amg"):
            continue
        if "time_vs_sklearn" not in row:
            lines.append(f"- {row['method']}: no comparison ({row['status']}).")
            continue
        ok = row["time_vs_sklearn"] <= 1.2 and row["ncut_vs_sklearn"] <= 1.1
        lines.append(f"- {row['method']} at full resolution: time {row['time_vs_sklearn']:.2f}x "
                     f"and Ncut {row['ncut_vs_sklearn']:.2f}x scikit-learn's "
                     f"({'within' if ok else 'outside'} the 1.2x / 1.1x bars).")
    for row in rows:
        if row["scale"] != 0.2 or row["method"] not in NEURAL_METHODS:
            continue
        if "ncut_vs_eigsh" not in row:
            lines.append(f"- {row['method']} at 20 %: no comparison ({row['status']}).")
            continue
        ok = row["ncut_vs_eigsh"] <= ISSUE_10_NCUT_BAR and row["regions"] == n_regions
        lines.append(f"- {row['method']} at 20 % (issue 10): Ncut {row['ncut']:.3g}, "
                     f"{row['ncut_vs_eigsh']:.3g}x eigsh arpack's, {row['regions']} of "
                     f"{n_regions} regions used ({'within' if ok else 'outside'} the "
                     f"{ISSUE_10_NCUT_BAR:g}x bar with all regions).")
    return lines


def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=None,
                        help=f"image scales (default {FULL_SCALES}; {QUICK_SCALES} with "
                             "--quick)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                        help=f"rows to run, from {list(METHODS)} (default: all; all but "
                             "lobpcg with --quick)")
    parser.add_argument("--n-regions", type=int, default=N_REGIONS,
                        help=f"regions K (default {N_REGIONS}, as scikit-learn's example)")
    parser.add_argument("--neural-max-scale", type=float, default=NEURAL_MAX_SCALE,
                        help=f"largest scale the neural rows run at (default {NEURAL_MAX_SCALE:g})")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds per fit before it is stopped (default 600; 120 quick)")
    parser.add_argument("--isolate", choices=("yes", "no"), default="yes",
                        help="each fit in a fresh subprocess (default yes)")
    parser.add_argument("--threads", type=int, default=None,
                        help="cap the BLAS/OpenMP threads of every fit (threadpoolctl); on a "
                             "shared machine 1 gives steadier times (default: no cap)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the benchmark; return ``{"rows", "files"}``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    quick = args.quick
    scales = args.scales or (QUICK_SCALES if quick else FULL_SCALES)
    methods = args.methods or (quick_methods() if quick else list(METHODS))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    cfg = {"seed": args.seed, "repeats": common.repeats(args), "n_regions": args.n_regions,
           "time_limit": args.time_limit or (120.0 if quick else 600.0),
           "isolate": args.isolate == "yes", "threads": args.threads}
    info = common.machine_info()
    rows, label_maps, images = [], {}, {}
    for scale in scales:
        images[scale] = coins_data(scale).image
        print(f"coins at {scale:g}: {images[scale].shape[0]} x {images[scale].shape[1]} pixels",
              flush=True)
        runs = [m for m in methods
                if m not in NEURAL_METHODS or scale <= args.neural_max_scale + 1e-9]
        scale_rows, label_maps[scale] = run_scale(scale, runs, cfg)
        rows += scale_rows + [
            {"scale": scale, "method": m, "status": f"skipped: scale > {args.neural_max_scale:g} "
             "(--neural-max-scale)"} for m in methods if m not in runs]
    print()
    print(common.text_table(rows, COLUMNS))
    notes = [
        f"scikit-learn's coin-segmentation graph (Gaussian σ = 2, `img_to_graph`, weights "
        f"exp(−{BETA:g} · gradient / std) + {EPS:g}, self-loops dropped), K = "
        f"{args.n_regions}, seed {args.seed}. `ncut`: normalised cut of the partition on that "
        "graph (lower is better; median over the runs, since scikit-learn's amg varies from run "
        "to run); `fit_s`: median of `repeats` fits (`times_s` lists them; "
        f"fits over {SLOW_FIT_S:.0f} s are not repeated), each in a fresh process, repeats "
        "interleaved across methods; `fit_mem_mb`: peak resident memory of the fit above the "
        "memory held before it (graph and libraries), `peak_rss_mb`: the process's peak; "
        "`*_vs_sklearn`: ratio to scikit-learn's `spectral_clustering` with the same solver; "
        "`regions`: regions the partition uses (of K); `ncut_vs_eigsh`: the neural rows' Ncut "
        "as a ratio to `eigsh arpack`'s. `eigsh *` rows use the estimator's default "
        "`embedding_norm='degree'` (scikit-learn's algorithm), so `eigsh arpack` is the "
        "estimator with its defaults (its ARPACK picks shift-invert mode itself on this pixel "
        "grid); `eigsh arpack row` uses `embedding_norm='row'` for comparison. `neural` and "
        "`discrete`: `NeuralEigenClustering` / `DiscreteNeuralEigenClustering` with their "
        "defaults, `fit(features, graph=W)` with `features` each pixel's smoothed intensity, "
        "row and column (scaled to [0, 1]); run at scales up to "
        f"{args.neural_max_scale:g} only (the discrete estimator takes minutes on 2 cores "
        "already at 20 %). BLAS/OpenMP threads per fit: "
        f"{'no cap' if args.threads is None else args.threads} (`--threads`).",
        *verdict(rows, args.n_regions)]
    out = common.output_dir(args, NAME)
    files = common.write_results(
        out, NAME, info=info, mode="quick" if quick else "full", argv=argv,
        title=__doc__.splitlines()[0], tables=[("", rows, COLUMNS)], notes=notes,
        figures=[(f"{NAME}.png", plot(images, label_maps, rows))])
    common.publish(files, args.docs_dir, NAME, quick=args.quick)
    print(f"\nwrote {', '.join(str(p) for p in files)}")
    return {"rows": rows, "files": files}


if __name__ == "__main__":
    main()
