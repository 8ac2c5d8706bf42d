"""Peers side by side: our estimators, scikit-learn, SpectralNet and cuML on the same data.

Data: digits (1797 points, 64 features, 10 classes) and the scaling benchmark's
``manifold_clusters`` (10 clusters on a curved 6-dim manifold in d = 384) at N = 2·10⁴
and 10⁵. Every row gets ``n_clusters`` and ``random_state`` and otherwise its defaults:

* ``eigsh`` / ``neural`` / ``discrete`` — :class:`~spectralnet_seg.cluster.EigshSpectralClustering`,
  :class:`~spectralnet_seg.cluster.NeuralEigenClustering`,
  :class:`~spectralnet_seg.cluster.DiscreteNeuralEigenClustering` (default kernel: the binary
  10-NN graph ``KNNKernel().graph(X)``, "our graph" below);
* ``sklearn <solver>`` — scikit-learn's ``SpectralClustering(affinity="nearest_neighbors")``
  (its own 10-NN graph, self-loops included) with ``eigen_solver`` arpack, lobpcg, amg;
* ``sklearn-fn <solver>`` — the solver alone: :func:`sklearn.cluster.spectral_clustering`
  on our graph; ``solver_s`` is its time, ``fit_s`` adds the time to build our graph;
* ``spectralnet`` — SpectralNet 1.1.0 (pip ``spectralnet``, Shaham et al. 2018) with its
  defaults (``spectral_hiddens`` ending in ``n_clusters``, which its API requires);
* ``spectralnet-ae-siamese`` — the settings its README points to for a 10-class data set
  (``examples/cluster_mnist.py``: ``should_use_ae=True, should_use_siamese=True``, the other
  parameters at their defaults);
* ``spectralnet-ae`` — its README's recipe for large data sets: an autoencoder first
  (``ae_hiddens=[2048, 512, 64, K]``), then ``spectral_hiddens=[512, 512, K]``;
* ``cuml`` — cuML's ``SpectralClustering`` (GPU only).

A peer whose package is missing, or which needs a GPU where there is none, gets a row with
that status. Each fit runs in a fresh subprocess (``--isolate yes``, the default in full
mode): its own peak memory (``peak_rss_mb``, data and libraries included) and a time limit
(``--time-limit``), after which it is stopped with status ``timeout``. Reported per
(data, method): NMI and ARI to the labels, the normalised cut of the labels on our graph
(:func:`spectralnet_seg.metrics.normalized_cut`, lower is better), fit time, peak memory and
the seeds; means over the seeds, except ``peak_rss_mb``, the largest. Then, from the
measured rows, where a peer is faster or
better than each of our estimators.

Usage::

    python benchmarks/bench_peers.py --quick
    python benchmarks/bench_peers.py --docs-dir docs/benchmarks
"""

from __future__ import annotations

import importlib.util
import io
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

NAME = "bench_peers"
COLUMNS = ["data", "n", "method", "status", "seeds", "nmi", "ari", "ncut", "fit_s", "solver_s",
           "peak_rss_mb", "nmi_spread"]
FULL_DATA = ("digits", "manifold-2e4", "manifold-1e5")
QUICK_DATA = ("digits-500",)
OURS = ("eigsh", "neural", "discrete")
# Seeds of a data set at least this large: one (SpectralNet alone takes minutes per fit).
ONE_SEED_FROM_N = 20_000
# Tolerances below which a difference is not called a win (timings on a shared machine).
NMI_MARGIN, NCUT_MARGIN, TIME_RATIO = 0.01, 0.01, 0.8


# ----------------------------------------------------------------------------- data
def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32) and labels of a data set name of :data:`FULL_DATA` or quick's."""
    if name.startswith("digits"):
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        if name != "digits":  # "digits-500": the first 500 rows
            n = int(name.split("-")[1])
            X, y = X[:n], y[:n]
    elif name.startswith("manifold-"):
        from bench_scaling import manifold_clusters

        X, y = manifold_clusters(int(float(name.split("-")[1])), seed=0)
    else:
        raise ValueError(f"unknown data set {name!r}; choose from {FULL_DATA + QUICK_DATA}")
    return np.ascontiguousarray(X, dtype=np.float32), np.asarray(y)


def default_graph(X: np.ndarray):
    """Our estimators' default affinity: ``KNNKernel()`` (binary 10-NN, ``(W + Wᵀ)/2``)."""
    from spectralnet_seg.kernels import KNNKernel

    return KNNKernel().graph(X)


# ----------------------------------------------------------------------------- methods
FitFn = Callable[[np.ndarray, int, int, object], np.ndarray]


@dataclass(frozen=True)
class Peer:
    """A row of the table: how to fit it and what it needs."""

    fit: FitFn  # (X, n_clusters, seed, graph or None) -> labels
    module: str | None = None  # a package that must be importable
    gpu: bool = False  # needs a CUDA device
    uses_graph: bool = False  # fit takes our prebuilt graph instead of X


def _ours(cls_name: str) -> FitFn:
    def fit(X, k, seed, graph):
        import spectralnet_seg

        return getattr(spectralnet_seg, cls_name)(k, random_state=seed).fit(X).labels_
    return fit


def _sklearn(solver: str) -> FitFn:
    def fit(X, k, seed, graph):
        from sklearn.cluster import SpectralClustering

        return SpectralClustering(k, affinity="nearest_neighbors", eigen_solver=solver,
                                  random_state=seed).fit(X).labels_
    return fit


def _sklearn_fn(solver: str) -> FitFn:
    def fit(X, k, seed, graph):
        from sklearn.cluster import spectral_clustering

        return spectral_clustering(graph, n_clusters=k, eigen_solver=solver, random_state=seed)
    return fit


def _spectralnet(settings: str) -> FitFn:
    def fit(X, k, seed, graph):
        import torch
        from spectralnet import SpectralNet

        torch.manual_seed(seed)
        np.random.seed(seed)  # noqa: NPY002 - SpectralNet draws from the global RNGs
        params = {
            "defaults": dict(spectral_hiddens=[1024, 1024, 512, k]),
            "ae-siamese": dict(should_use_ae=True, should_use_siamese=True,
                               spectral_hiddens=[1024, 1024, 512, k]),
            "ae": dict(should_use_ae=True, ae_hiddens=[2048, 512, 64, k],
                       spectral_hiddens=[512, 512, k]),
        }[settings]
        model = SpectralNet(n_clusters=k, **params)
        X_t = torch.from_numpy(X)
        with _fresh_spectralnet_weights():
            model.fit(X_t)
        return np.asarray(model.predict(X_t))
    return fit


@contextmanager
def _fresh_spectralnet_weights():
    """Give SpectralNet's autoencoder and Siamese trainers an empty weights folder.

    SpectralNet 1.1.0 saves the trained autoencoder and Siamese network under its own
    package folder (``spectralnet/_trainers/weights/``) and, when such a file exists, loads it
    and skips training: a second fit would reuse the first fit's networks (from other data,
    or fail on another architecture). Each fit here trains its own, as a first fit would.
    """
    import spectralnet._cluster as cluster

    trainers = {"AETrainer": "ae_weights.pth", "SiameseTrainer": "siamese_weights.pth"}
    originals = {name: getattr(cluster, name) for name in trainers}
    with tempfile.TemporaryDirectory(prefix="spectralnet_weights_") as folder:
        def fresh(base, file_name):
            class Fresh(base):
                def __init__(self, *args, **kwargs):
                    super().__init__(*args, **kwargs)
                    self.weights_path = str(Path(folder) / file_name)
            return Fresh
        try:
            for name, file_name in trainers.items():
                setattr(cluster, name, fresh(originals[name], file_name))
            yield
        finally:
            for name, original in originals.items():
                setattr(cluster, name, original)


def _cuml(X, k, seed, graph):
    from cuml.cluster import SpectralClustering

    return np.asarray(SpectralClustering(k, random_state=seed).fit_predict(X))


SOLVERS = ("arpack", "lobpcg", "amg")
METHODS: dict[str, Peer] = {
    "eigsh": Peer(_ours("EigshSpectralClustering")),
    "neural": Peer(_ours("NeuralEigenClustering")),
    "discrete": Peer(_ours("DiscreteNeuralEigenClustering")),
    **{f"sklearn {s}": Peer(_sklearn(s), module="pyamg" if s == "amg" else None)
       for s in SOLVERS},
    **{f"sklearn-fn {s}": Peer(_sklearn_fn(s), module="pyamg" if s == "amg" else None,
                               uses_graph=True) for s in SOLVERS},
    "spectralnet": Peer(_spectralnet("defaults"), module="spectralnet"),
    "spectralnet-ae-siamese": Peer(_spectralnet("ae-siamese"), module="spectralnet"),
    "spectralnet-ae": Peer(_spectralnet("ae"), module="spectralnet"),
    "cuml": Peer(_cuml, module="cuml", gpu=True),
}


def unavailable(method: str) -> str | None:
    """Why ``method`` cannot run here ("not installed: cuml", "no GPU"), or None."""
    peer = METHODS[method]
    if peer.module and importlib.util.find_spec(peer.module) is None:
        return f"not installed: {peer.module}"
    if peer.gpu:
        import torch

        if not torch.cuda.is_available():
            return "no GPU"
    return None


# ----------------------------------------------------------------------------- measuring
def measure(data: str, method: str, seed: int, graph_path: str | None, threads: int) -> dict:
    """One fit (in its own process when isolated): labels, fit time, peak memory."""
    import scipy.sparse as sp
    import torch

    torch.set_num_threads(threads)
    X, y = load(data)
    graph = sp.load_npz(graph_path) if METHODS[method].uses_graph else None
    module = METHODS[method].module
    if module:  # import outside the timed block
        importlib.import_module(module)
    chatter = io.StringIO()  # SpectralNet's progress bars and prints
    with warnings.catch_warnings(), redirect_stdout(chatter), redirect_stderr(chatter):
        warnings.simplefilter("ignore")  # disconnected graphs, convergence
        with common.PeakRSS() as mem:
            tic = time.perf_counter()
            labels = METHODS[method].fit(X, len(np.unique(y)), seed, graph)
            fit_s = time.perf_counter() - tic
    return {"labels": np.asarray(labels, dtype=np.int32), "fit_s": fit_s,
            "peak_rss_mb": mem.peak_mb}


def seeds_for(n: int, seeds: int) -> list[int]:
    """Seeds 0 .. seeds-1, or one seed for a data set of :data:`ONE_SEED_FROM_N` points."""
    return list(range(1 if n >= ONE_SEED_FROM_N else seeds))


def run(data: list[str], methods: list[str], cfg: dict,
        history: dict[str, list[dict]] | None = None) -> tuple[list[dict], dict]:
    """Every (data, method) over its seeds; rows and the labels of the first seed.

    ``history`` (method -> rows of earlier manifold sizes) carries the skip rule across
    calls; it is updated in place.
    """
    from bench_scaling import MIN_TIME_SLOPE, skip_reason
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from spectralnet_seg.metrics import normalized_cut

    rows, labels_of = [], {}
    history = {} if history is None else history
    tmp = tempfile.TemporaryDirectory(prefix="bench_peers_")
    for name in data:
        X, y = load(name)
        tic = time.perf_counter()
        graph = default_graph(X)
        graph_s = time.perf_counter() - tic
        graph_path = str(Path(tmp.name) / f"{name}.npz")
        import scipy.sparse as sp

        sp.save_npz(graph_path, graph)
        seeds = seeds_for(len(X), cfg["seeds"])
        print(f"{name}: N = {len(X):,}, our graph {graph.nnz:,} non-zeros in {graph_s:.1f} s, "
              f"seeds {seeds}", flush=True)
        for method in methods:
            row = {"data": name, "n": len(X), "method": method}
            reason = unavailable(method)
            if reason is None and name.startswith("manifold"):
                # a smaller size that timed out or extrapolates past the limit
                reason = skip_reason(history.get(method, []), len(X), cfg["time_limit"],
                                     0.8 * common.available_memory_bytes() / 2**20,
                                     MIN_TIME_SLOPE.get(method, 1.0))
            if reason is not None:
                rows.append({**row, "status": reason})
                print(f"  {method:<24s} {reason}", flush=True)
                continue
            scores, failure = [], None
            # The limit bounds the whole fit: a graph-fed solver gets what the graph left.
            limit = cfg["time_limit"] - (graph_s if METHODS[method].uses_graph else 0.0)
            for seed in seeds:
                status, value = ("timeout", f"the graph took {graph_s:.0f} s of the limit") \
                    if limit <= 0 else common.run_isolated(
                        measure, dict(data=name, method=method, seed=seed,
                                      graph_path=graph_path, threads=cfg["threads"]),
                        timeout=limit, isolate=cfg["isolate"])
                if status != "ok":
                    failure = f"{status}: {str(value).strip().splitlines()[0]}"[:120]
                    break
                labels = value["labels"]
                labels_of.setdefault((name, method), labels)
                scores.append(dict(
                    nmi=normalized_mutual_info_score(y, labels),
                    ari=adjusted_rand_score(y, labels), ncut=normalized_cut(graph, labels),
                    fit_s=value["fit_s"], peak_rss_mb=value["peak_rss_mb"], seed=seed))
            if failure:  # one failed seed fails the row: means over fewer seeds would mislead
                row["status"] = failure
            else:
                row.update({key: float(np.mean([s[key] for s in scores]))
                            for key in ("nmi", "ari", "ncut", "fit_s")},
                           peak_rss_mb=max(s["peak_rss_mb"] for s in scores),
                           nmi_spread=float(np.ptp([s["nmi"] for s in scores])),
                           seeds=" ".join(str(s["seed"]) for s in scores), status="ok")
                if METHODS[method].uses_graph:  # the solver alone; fit_s from features
                    row["solver_s"] = row["fit_s"]
                    row["fit_s"] = row["solver_s"] + graph_s
            rows.append(row)
            if name.startswith("manifold"):  # sizes of one distribution extrapolate
                history.setdefault(method, []).append(row)
            print("  " + common.text_table([row], COLUMNS[2:]).splitlines()[-1], flush=True)
    tmp.cleanup()
    return rows, labels_of


# ----------------------------------------------------------------------------- verdict
def peer_wins(rows: list[dict]) -> list[str]:
    """Where a peer is faster or better than one of our estimators, from the measured rows.

    A peer is *better* when its NMI is more than :data:`NMI_MARGIN` above ours or its
    normalised cut more than :data:`NCUT_MARGIN` below ours on the same data; *faster* when
    its fit takes less than :data:`TIME_RATIO` of ours (``sklearn-fn`` rows: graph + solver).
    """
    lines = []
    for data in dict.fromkeys(r["data"] for r in rows):
        done = {r["method"]: r for r in rows if r["data"] == data and r.get("status") == "ok"}
        ours = [m for m in OURS if m in done]
        found = False
        for peer, p in done.items():
            if peer in OURS:
                continue
            wins = []
            for mine in ours:
                o = done[mine]
                what = []
                if p["nmi"] > o["nmi"] + NMI_MARGIN:
                    what.append(f"NMI {p['nmi']:.3f} vs {o['nmi']:.3f}")
                if p["ncut"] < o["ncut"] - NCUT_MARGIN:
                    what.append(f"Ncut {p['ncut']:.3f} vs {o['ncut']:.3f}")
                if p["fit_s"] < TIME_RATIO * o["fit_s"]:
                    what.append(f"fit {p['fit_s']:.3g} s vs {o['fit_s']:.3g} s")
                if what:
                    wins.append(f"{mine} ({', '.join(what)})")
            if wins:
                found = True
                lines.append(f"- {data}: **{peer}** beats " + "; ".join(wins) + ".")
        if ours and not found:
            lines.append(f"- {data}: no peer is faster or better than any of "
                         f"{', '.join(ours)}.")
    return lines


def plot(rows: list[dict]):
    plt = common.plt()
    data = list(dict.fromkeys(r["data"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows if r.get("status") == "ok"))
    by = {(r["data"], r["method"]): r for r in rows if r.get("status") == "ok"}
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.6 * len(data) * 2, 4.2))
    width = 0.8 / max(len(methods), 1)
    for ax, key, label in ((axes[0], "nmi", "NMI"), (axes[1], "fit_s", "fit time (s)")):
        for j, method in enumerate(methods):
            values = [by[(d, method)][key] if (d, method) in by else np.nan for d in data]
            ax.bar(np.arange(len(data)) + (j - (len(methods) - 1) / 2) * width, values, width,
                   label=method)
        ax.set_xticks(np.arange(len(data)), data)
        ax.set_ylabel(label)
    axes[0].set_ylim(0, 1.05)
    axes[1].set_yscale("log")
    if methods:  # none when every row failed or was skipped
        axes[0].legend(fontsize=7, ncol=min(len(methods), 5), loc="lower left",
                       bbox_to_anchor=(0.0, 1.02))
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- main
def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=None,
                        help=f"data sets (default {list(FULL_DATA)}; {list(QUICK_DATA)} with "
                             "--quick); digits-N takes the first N digits, manifold-N the "
                             "scaling benchmark's data at N points")
    parser.add_argument("--methods", nargs="+", default=None, choices=list(METHODS),
                        help="rows (default: all)")
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"random_state 0 .. SEEDS-1 (default 3; 1 with --quick); one "
                             f"seed for N >= {ONE_SEED_FROM_N:,}")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds before a fit's process is stopped (status 'timeout'); "
                             "a larger manifold size that extrapolates past it is skipped "
                             "(default 1800; 120 with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in each fit (default: OMP_NUM_THREADS, else the "
                             "available cores)")
    parser.add_argument("--update", action="store_true",
                        help="keep the rows of the existing table in the output folder and "
                             "replace (or add) only the (data, method) rows of this run")
    parser.add_argument("--isolate", choices=("yes", "no"), default=None,
                        help="one subprocess per fit (own peak memory, time limit enforced); "
                             "default yes, no with --quick")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the benchmark; return ``{"rows", "wins", "labels", "files"}``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    data = args.data or list(QUICK_DATA if args.quick else FULL_DATA)
    methods = args.methods or list(METHODS)
    cfg = {"seeds": args.seeds or (1 if args.quick else 3),
           "time_limit": args.time_limit or (120.0 if args.quick else 1800.0),
           "threads": common.default_threads(args.threads),
           "isolate": (args.isolate or ("no" if args.quick else "yes")) == "yes"}
    info = common.machine_info()
    earlier = read_rows(common.output_dir(args, NAME) / f"{NAME}.csv") if args.update else []
    args.earlier_run = earlier_run(common.output_dir(args, NAME) / f"{NAME}.md")
    rows, labels, history, files = [], {}, {}, []
    for name in data:  # results are rewritten after each data set: a stopped run keeps them
        new_rows, new_labels = run([name], methods, cfg, history)
        rows = merge_rows(rows, new_rows)
        labels.update(new_labels)
        wins, files = _write(args, argv, info, cfg, merge_rows(earlier, rows),
                             updated=rows if args.update else None)
    rows = merge_rows(earlier, rows)
    print()
    print(common.text_table(rows, COLUMNS))
    print("\n".join(wins))
    print(f"\nwrote {', '.join(str(p) for p in files)}")
    return {"rows": rows, "wins": wins, "labels": labels, "files": files}


def read_rows(path: Path) -> list[dict]:
    """Rows of an earlier table (CSV), numbers as numbers, empty cells left out."""
    import csv

    if not path.exists():
        raise SystemExit(f"--update: no table to update at {path}")
    text = {"data", "method", "status", "seeds"}
    with open(path, newline="") as fh:
        return [{key: (value if key in text else int(value) if key == "n" else float(value))
                 for key, value in row.items() if value != ""} for row in csv.DictReader(fh)]


def earlier_run(md: Path) -> str:
    """The run line of an earlier table's header (date, mode, command), or "unknown"."""
    if md.exists():
        for line in md.read_text().splitlines():
            if line.startswith("- **Run:**"):
                return line.removeprefix("- **Run:**").strip()
    return "unknown"


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with each (data, method) row of ``new`` in its place; new pairs appended."""
    replace = {(r["data"], r["method"]): r for r in new}
    merged = [replace.pop((r["data"], r["method"]), r) for r in old]
    return merged + [r for r in new if (r["data"], r["method"]) in replace]


def _write(args, argv: list[str], info: dict, cfg: dict, rows: list[dict],
           updated: list[dict] | None = None):
    """The verdict lines and the files of ``rows`` (rewritten after each data set)."""
    wins = peer_wins(rows)
    if updated is not None:  # --update: say which rows this run produced
        pairs = ", ".join(f"{r['data']} / {r['method']}" for r in updated)
        wins = [*wins, "", f"Rows rerun by this command (`--update`): {pairs}; the other "
                f"rows come from the earlier run ({args.earlier_run})."]
    notes = [
        "Each row gets `n_clusters` (the number of classes) and `random_state` only, "
        "except `spectralnet-ae-siamese` and `spectralnet-ae`, the settings SpectralNet's "
        "README points to (see the script's docstring). `nmi`, `ari`, `ncut`, `fit_s`: means "
        f"over the seeds listed (one seed from N = {ONE_SEED_FROM_N:,}); `ncut`: normalised "
        "cut of the labels on our default graph (binary 10-NN, `KNNKernel().graph(X)`), "
        "lower is better; `sklearn-fn` rows run scikit-learn's `spectral_clustering` on that "
        "graph: `solver_s` is the solver alone, `fit_s` adds the graph "
        "(built once per data set). `peak_rss_mb`: peak resident memory of the fitting "
        "process (data and libraries included)"
        + (", each fit in a fresh subprocess" if cfg["isolate"] else
           ", all fits in one process (--isolate no): earlier fits' memory hides later "
           "peaks") + f"; time limit {cfg['time_limit']:.0f} s per fit. "
        "Timings come from a machine that other jobs may share: differences under ~20 % "
        "are noise.",
        f"### Where a peer is faster or better (NMI +{NMI_MARGIN}, Ncut −{NCUT_MARGIN}, "
        f"fit time under {TIME_RATIO:g}× ours)", *wins]
    out = common.output_dir(args, NAME)
    files = common.write_results(
        out, NAME, info=info, mode="quick" if args.quick else "full", argv=argv,
        title=__doc__.splitlines()[0], tables=[("", rows, COLUMNS)], notes=notes,
        figures=[(f"{NAME}.png", plot(rows))])
    common.plt().close("all")
    common.publish(files, args.docs_dir, NAME, quick=args.quick)
    return wins, files


if __name__ == "__main__":
    main()
