"""Clustering quality of every estimator and k-means on the same inputs: NMI, ARI, mIoU.

Data sets:

* ``digits`` — scikit-learn's 8 × 8 digits (1797 × 64, 10 classes), clustered and scored
  transductively;
* ``moons`` / ``circles`` — ``make_moons`` / ``make_circles`` with noise 0.05 (k-means fails
  on both), transductive;
* ``mosaics`` — the demo's texture mosaics (6 texture classes) and task (its extractor and
  kernel, :class:`~spectralnet_seg.config.MosaicConfig`): training-free
  :class:`~spectralnet_seg.features.PixelExtractor` features, fit on training mosaics, scored
  on held-out mosaics (out-of-sample, per pixel after upsampling). scikit-learn's
  ``SpectralClustering`` has no ``predict`` and is left out there;
* ``mosaics-other`` — mosaics of the three photographs the demo does not use (retina,
  starfield, moon), the same sizes and protocol, but everything with its defaults:
  ``make_extractor("pixel")`` and each estimator's own kernel (issue 11's check). Also the
  normalised cut of each method's training-token labels on that kernel's graph
  (``train_ncut``) and, in a ``true labels`` row, that of the classes: whether a method that
  cuts the graph better also finds the classes.

Methods: ``eigsh`` (:class:`EigshSpectralClustering`), ``neural``
(:class:`NeuralEigenClustering`), ``discrete`` (:class:`DiscreteNeuralEigenClustering`) — all
three on the same kernel object — ``sklearn-spectral`` (``SpectralClustering`` with its own
kNN affinity, same k) and ``kmeans``. K equals the number of classes; mIoU and accuracy use
the Hungarian cluster→class matching.

Usage::

    python benchmarks/bench_quality.py --quick
    python benchmarks/bench_quality.py
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

NAME = "bench_quality"
DATASETS = ("digits", "moons", "circles", "mosaics", "mosaics-other")
MOSAICS = ("mosaics", "mosaics-other")
OTHER_TEXTURES = ("retina", "starfield", "moon")  # photographs the demo's mosaics do not use
METHODS = ("eigsh", "neural", "discrete", "sklearn-spectral", "kmeans")
COLUMNS = ["dataset", "method", "status", "nmi", "ari", "miou", "accuracy", "train_ncut", "fit_s",
           "repeats"]
TRUTH = "true labels"  # mosaics-other's reference row: the normalised cut of the classes
# Per data set: the kernel every spectral method shares. The neural estimators run with their
# own defaults (as on the mosaics, MosaicConfig): no setting is tuned on these labels.
SETTINGS = {
    "digits": {"kernel": ("knn", dict(n_neighbors=10, metric="cosine")), "neural": {}},
    "moons": {"kernel": ("rbf", dict(gamma=50.0)), "neural": {}},
}
SETTINGS["circles"] = SETTINGS["moons"]
QUICK_MAX_ITER = 300  # --quick caps the neural methods' training steps (a smoke test)


def mosaic_config():
    """The mosaic task's configuration (sizes, features, kernel; estimators' defaults)."""
    from spectralnet_seg.config import MosaicConfig

    return MosaicConfig()


def load_vectors(name: str, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors and labels of the vector data sets (digits scaled to [0, 1])."""
    from sklearn.datasets import load_digits, make_circles, make_moons

    if name == "digits":
        X, y = load_digits(return_X_y=True)
        return (X / 16.0).astype(np.float32), y
    if name == "moons":
        return make_moons(n_samples, noise=0.05, random_state=seed)
    if name == "circles":
        return make_circles(n_samples, noise=0.05, factor=0.5, random_state=seed)
    raise ValueError(f"unknown data set {name!r}; choose from {DATASETS}")


def kernel_and_neural(dataset: str, cfg: dict):
    """The shared kernel, scikit-learn's matching affinity and the neural parameters."""
    from spectralnet_seg.kernels import make_kernel

    if dataset == "mosaics-other":  # defaults everywhere: the estimators' own kernel
        kernel = None
        sklearn_affinity = dict(affinity="nearest_neighbors")
        neural = {}
    elif dataset == "mosaics":
        demo = mosaic_config()
        kernel = demo.build_kernel()
        sklearn_affinity = dict(affinity="nearest_neighbors", n_neighbors=demo.n_neighbors)
        neural = demo.neural_params()
    else:
        name, params = SETTINGS[dataset]["kernel"]
        kernel = make_kernel(name, **params)
        sklearn_affinity = (dict(affinity="rbf", gamma=params["gamma"]) if name == "rbf" else
                            dict(affinity="nearest_neighbors", n_neighbors=params["n_neighbors"]))
        neural = dict(SETTINGS[dataset]["neural"])
    if cfg["max_iter"] is not None:
        neural["max_iter"] = cfg["max_iter"]
    elif cfg["quick"]:
        neural["max_iter"] = QUICK_MAX_ITER
    if cfg["hidden"] is not None:
        neural["hidden_layer_sizes"] = tuple(cfg["hidden"])
    if cfg["batch_size"] is not None:
        neural["batch_size"] = cfg["batch_size"]
    return kernel, sklearn_affinity, neural


def make_estimator(method: str, n_clusters: int, dataset: str, cfg: dict):
    """``method`` from the estimator registry with the benchmark's settings for ``dataset``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    kernel, sklearn_affinity, neural_params = kernel_and_neural(dataset, cfg)
    shared = {} if kernel is None else {"kernel": kernel}
    params = {"eigsh": shared,
              "neural": dict(shared, **neural_params, device=cfg["device"]),
              "discrete": dict(shared, **neural_params, device=cfg["device"]),
              "sklearn-spectral": sklearn_affinity,
              "kmeans": dict(n_init=10)}[method]
    return common.build_estimator(method, n_clusters, random_state=cfg["seed"], **params)


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """NMI, ARI, and mIoU / accuracy after Hungarian matching (255 = ignore in y_true)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from spectralnet_seg.metrics import segmentation_scores

    keep = y_true != 255
    seg = segmentation_scores(y_true, y_pred, n_classes, matching="hungarian",
                              n_clusters=int(max(y_pred.max() + 1, n_classes)))
    return {"nmi": normalized_mutual_info_score(y_true[keep], y_pred[keep]),
            "ari": adjusted_rand_score(y_true[keep], y_pred[keep]),
            "miou": seg["mean_iou"], "accuracy": seg["pixel_accuracy"]}


def run_vectors(dataset: str, method: str, cfg: dict) -> dict:
    """Transductive clustering of a vector data set: fit_predict, scored on the same rows."""
    X, y = load_vectors(dataset, cfg["n_points"], cfg["seed"])
    n_classes = len(np.unique(y))
    labels = None

    def fit():
        nonlocal labels
        labels = make_estimator(method, n_classes, dataset, cfg).fit_predict(X)

    fit_s, times, _ = common.median_time(fit, cfg["repeats"])
    return {**scores(y, np.asarray(labels), n_classes), "fit_s": fit_s, "repeats": len(times)}


def mosaic_splits(dataset: str, cfg: dict):
    """The training and held-out mosaics of ``dataset`` (seeds 0 and 1)."""
    from spectralnet_seg.datasets import TextureMosaics

    textures = OTHER_TEXTURES if dataset == "mosaics-other" else None
    return tuple(TextureMosaics(cfg[f"n_{split}_images"], image_size=cfg["image_size"],
                                textures=textures, seed=seed)
                 for split, seed in (("train", 0), ("test", 1)))


def default_graph_and_token_classes(extractor, train) -> tuple:
    """The default kernel's graph of the training tokens and the class under each token.

    The graph is what eigsh and the neural estimators cut with their defaults (a binary
    Euclidean 10-NN graph, ``make_kernel("knn")``); the class of a token is the texture under
    its cell's centre.
    """
    from spectralnet_seg.kernels import make_kernel

    extracted = extractor.extract(train.images())
    graph = make_kernel("knn").graph(extracted.flatten())
    return graph, common.token_classes(train.masks(), extracted.grid_shape)


def run_mosaics(dataset: str, method: str, cfg: dict) -> dict:
    """Fit a Segmenter on training mosaics, score held-out mosaics per pixel.

    On ``mosaics-other`` the row also carries the training tokens' labels
    (``train_labels``), which [`add_train_cuts`][add_train_cuts] turns into ``train_ncut``.
    """
    from spectralnet_seg.features import make_extractor
    from spectralnet_seg.segmentation import Segmenter

    train, test = mosaic_splits(dataset, cfg)
    train_images = train.images()
    segmenter = None

    def fit():
        nonlocal segmenter
        extractor = (make_extractor("pixel") if dataset == "mosaics-other"
                     else mosaic_config().build_extractor())
        estimator = make_estimator(method, train.n_classes, dataset, cfg)
        segmenter = Segmenter(extractor, estimator).fit(train_images)

    fit_s, times, _ = common.median_time(fit, cfg["repeats"])
    predictions = segmenter.predict(test.images())
    y_true = np.concatenate([m.ravel() for m in test.masks()])
    y_pred = np.concatenate([p.ravel() for p in predictions])
    row = {**scores(y_true, y_pred, train.n_classes), "fit_s": fit_s, "repeats": len(times)}
    if dataset == "mosaics-other":
        row["train_labels"] = segmenter.estimator_.labels_
    return row


def add_train_cuts(rows: list[dict], cfg: dict) -> dict:
    """Turn the ``train_labels`` of ``mosaics-other``'s rows into ``train_ncut``.

    The default graph of the training tokens is built once for all methods. Returns the
    reference row: the normalised cut of the true token classes.
    """
    from spectralnet_seg.features import make_extractor
    from spectralnet_seg.metrics import normalized_cut

    train, _ = mosaic_splits("mosaics-other", cfg)
    graph, classes = default_graph_and_token_classes(make_extractor("pixel"), train)
    for row in rows:
        if row["dataset"] == "mosaics-other" and "train_labels" in row:
            row["train_ncut"] = normalized_cut(graph, row.pop("train_labels"))
    return {"dataset": "mosaics-other", "method": TRUTH, "status": "reference",
            "train_ncut": normalized_cut(graph, classes)}


def measure(dataset: str, method: str, cfg: dict) -> dict:
    """One table row; failures become a status message."""
    row = {"dataset": dataset, "method": method}
    if dataset in MOSAICS and method == "sklearn-spectral":
        return {**row, "status": "n/a: no out-of-sample predict"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # disconnected graphs etc.: the scores show it
        try:
            result = (run_mosaics(dataset, method, cfg) if dataset in MOSAICS
                      else run_vectors(dataset, method, cfg))
        except Exception as err:  # keep measuring the other methods
            first_line = (str(err).strip().splitlines() or [""])[0]
            return {**row, "status": f"error: {type(err).__name__}: {first_line}"[:160]}
    return {**row, "status": "ok", **result}


def mosaic_check(rows: list[dict]) -> str | None:
    """Issue 11's check on ``mosaics-other``, from the rows: the discrete estimator's mIoU
    within 0.05 of eigsh's and above k-means'; None when a row is missing."""
    miou = {r["method"]: r.get("miou") for r in rows
            if r["dataset"] == "mosaics-other" and r.get("status") == "ok"}
    if not all(miou.get(m) is not None for m in ("discrete", "eigsh", "kmeans")):
        return None
    discrete, eigsh, kmeans = miou["discrete"], miou["eigsh"], miou["kmeans"]
    near = "met" if discrete >= eigsh - 0.05 else "not met"
    above = "met" if discrete > kmeans else "not met"
    line = (f"mosaics-other (issue 11): discrete mIoU {discrete:.3f} against eigsh's "
            f"{eigsh:.3f} — within 0.05: {near}; against k-means' {kmeans:.3f} on the same "
            f"features — above: {above}.")
    cuts = {r["method"]: r["train_ncut"] for r in rows
            if r["dataset"] == "mosaics-other" and r.get("train_ncut") is not None}
    if TRUTH in cuts:
        ranked = sorted(cuts, key=cuts.get)
        line += (" Normalised cut of the training tokens on the default graph, lowest first: "
                 + ", ".join(f"{m} {cuts[m]:.4f}" for m in ranked) + ".")
    return line


def plot(rows: list[dict], datasets, methods):
    """Grouped bars of NMI per data set and method."""
    plt = common.plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        values = [next((r.get("nmi") or 0.0 for r in rows
                        if r["dataset"] == d and r["method"] == method), 0.0) for d in datasets]
        ax.bar(np.arange(len(datasets)) + j * width, values, width, label=method)
    ax.set_xticks(np.arange(len(datasets)) + 0.4 - width / 2, datasets)
    ax.set_ylabel("NMI")
    ax.set_ylim(0, 1.05)
    ax.set_title("Clustering quality (NMI; missing bar = not run / failed)")
    ax.legend(fontsize=8, ncol=3, loc="lower left")
    return fig


def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    demo = mosaic_config()
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--n-points", type=int, default=None,
                        help="points of moons/circles (default 500; 300 with --quick)")
    parser.add_argument("--max-iter", type=int, default=None,
                        help="steps of the neural methods, all data sets (default: the "
                             f"estimators' own; at most {QUICK_MAX_ITER} with --quick)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="minibatch of the neural methods, all data sets (default: the "
                             "estimators' own)")
    parser.add_argument("--hidden", type=int, nargs="+", default=None,
                        help="hidden widths of the neural MLP, all data sets (default: the "
                             "estimators' own)")
    parser.add_argument("--mosaics", type=int, nargs=3, default=None,
                        metavar=("N_TRAIN", "N_TEST", "SIZE"),
                        help="training / held-out mosaics and their side (default: the demo's "
                             f"{demo.n_train} {demo.n_test} {demo.image_size}; 6 2 64 with --quick)")
    parser.add_argument("--device", default="auto", help="device of the neural methods")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the benchmark; return ``{"rows", "files"}``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    quick = args.quick
    demo = mosaic_config()
    n_train, n_test, size = args.mosaics or (
        (6, 2, 64) if quick else (demo.n_train, demo.n_test, demo.image_size))
    cfg = {"seed": args.seed, "repeats": common.repeats(args, quick_default=1),
           "n_points": args.n_points or (300 if quick else 500),
           "max_iter": args.max_iter, "batch_size": args.batch_size, "hidden": args.hidden,
           "quick": quick, "device": args.device, "n_train_images": n_train, "n_test_images": n_test,
           "image_size": size}
    info = common.machine_info()
    rows = []
    for dataset in args.datasets:
        for method in args.methods:
            tic = time.perf_counter()
            row = measure(dataset, method, cfg)
            rows.append(row)
            print(common.text_table([row], COLUMNS).splitlines()[-1],
                  f"  [{time.perf_counter() - tic:.1f}s]", flush=True)
        if dataset == "mosaics-other":
            rows.append(add_train_cuts(rows, cfg))
    print()
    print(common.text_table(rows, COLUMNS))
    notes = ["K = number of classes; Hungarian matching for mIoU and accuracy; NMI/ARI need "
             "no matching. eigsh, neural and discrete share one kernel object per data set; "
             "scikit-learn's SpectralClustering gets its own affinity of the same kind and "
             "size (RBF with the same gamma, or its Euclidean kNN graph with the same k and "
             "self-loops, where ours may be cosine), k-means the same "
             f"inputs. moons/circles: {cfg['n_points']} points, noise 0.05; digits scaled to "
             f"[0, 1]. Mosaics: {n_train} training and {n_test} held-out images of {size} px, "
             "pixel features, scored per pixel on the held-out images (out-of-sample); "
             f"mosaics-other: the photographs the demo does not use ({', '.join(OTHER_TEXTURES)}), "
             "the default pixel extractor and every estimator's default kernel; `train_ncut`: "
             "the normalised cut of the training tokens' labels on that kernel's graph (the "
             "objective the spectral methods lower; lower is better), the `true labels` row "
             "that of the classes under the tokens. "
             "`fit_s` is the median of `repeats` fits."]
    settings = ["| data set | kernel | neural settings |", "|---|---|---|"]
    for dataset in args.datasets:
        kernel, _, neural = kernel_and_neural(dataset, cfg)
        kernel_text = ("each estimator's default" if kernel is None
                       else f"`{' '.join(repr(kernel).split())}`")
        settings.append(f"| {dataset} | {kernel_text} | "
                        f"{', '.join(f'{k}={v}' for k, v in neural.items()) or 'defaults'} |")
    notes.append("\n".join(settings))
    check = mosaic_check(rows)
    if check:
        notes.append(check)
    out = common.output_dir(args, NAME)
    files = common.write_results(
        out, NAME, info=info, mode="quick" if quick else "full", argv=argv,
        title=__doc__.splitlines()[0],
        tables=[("", rows, COLUMNS)], notes=notes,
        figures=[(f"{NAME}.png", plot(rows, args.datasets, args.methods))])
    common.publish(files, args.docs_dir, NAME, quick=args.quick)
    print(f"\nwrote {', '.join(str(p) for p in files)}")
    return {"rows": rows, "files": files}


if __name__ == "__main__":
    main()
