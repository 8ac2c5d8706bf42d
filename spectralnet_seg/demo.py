"""The offline demo: four clusterings of the same features on the bundled texture mosaics.

Training-free pixel features (:class:`~spectralnet_seg.features.PixelExtractor`) of a training
split of mosaics are clustered by

* ``eigsh`` — :class:`~spectralnet_seg.cluster.EigshSpectralClustering`, the exact baseline
  (sparse eigendecomposition of the full graph, Nyström extension for new images);
* ``neural`` — :class:`NeuralEigenClustering` (NeuralEF eigenfunctions + k-means);
* ``discrete`` — :class:`DiscreteNeuralEigenClustering` (outputs are cluster assignments);
* ``kmeans`` — scikit-learn's k-means on the same features, the usual baseline,

the three spectral methods on the *same kernel*. Held-out mosaics are segmented
out-of-sample and scored with the many-to-one majority matching; the table (mIoU, pixel
accuracy, fit and predict time) and overlay pictures are written to a folder.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DemoConfig", "make_estimator", "demo_kernel", "run_demo", "format_table",
           "ESTIMATORS"]

ESTIMATORS = ("eigsh", "neural", "discrete", "kmeans")


@dataclass
class DemoConfig:
    """Sizes of the demo (the defaults finish in about a minute on 2 CPU cores).

    Attributes
    ----------
    n_train, n_test : int
        Training mosaics (fit) and held-out mosaics (evaluation, out-of-sample predict).
    image_size : int
        Side of the square mosaics in pixels.
    n_clusters : int
        Clusters K of every method (more than the 6 texture classes, matched many-to-one).
    n_neighbors : int
        Neighbours of the shared feature kNN kernel.
    max_iter, batch_size : int
        Training steps and minibatch size of the neural estimators.
    methods : tuple of str
        Which of :data:`ESTIMATORS` to run.
    random_state : int
        Seed of the estimators (the mosaics use seeds 0 and 1 for the two splits).
    """

    n_train: int = 24
    n_test: int = 8
    image_size: int = 96
    n_clusters: int = 12
    n_neighbors: int = 32
    max_iter: int = 400
    batch_size: int = 1024
    methods: tuple = ESTIMATORS
    random_state: int = 0
    extra: dict = field(default_factory=dict)

    @classmethod
    def quick(cls) -> DemoConfig:
        """A smaller run for smoke tests (a few seconds)."""
        return cls(n_train=8, n_test=4, image_size=64, max_iter=120, batch_size=512)


def demo_kernel(n_neighbors: int = 32):
    """The kernel shared by eigsh and the neural estimators: a cosine kNN graph.

    Parameters
    ----------
    n_neighbors : int, default=32
        Neighbours per token.

    Returns
    -------
    KNNKernel
    """
    from .kernels import KNNKernel

    return KNNKernel(n_neighbors=n_neighbors, metric="cosine", weighting="cosine")


def make_estimator(name: str, n_clusters: int, *, kernel=None, max_iter: int = 400,
                   batch_size: int = 1024, device: str = "auto", random_state=0,
                   verbose: bool = False):
    """Build one of the demo's estimators by name.

    Parameters
    ----------
    name : {"eigsh", "neural", "discrete", "kmeans"}
        Which estimator.
    n_clusters : int
        Number of clusters.
    kernel : Kernel or str, optional
        Affinity of the spectral methods; :func:`demo_kernel` by default.
    max_iter, batch_size : int
        Training steps and minibatch size of the neural estimators.
    device : str, default="auto"
        Device of the neural estimators.
    random_state : int, default=0
        Seed.
    verbose : bool, default=False
        Progress bars of the neural estimators.

    Returns
    -------
    estimator
    """
    from sklearn.cluster import KMeans

    from .cluster import EigshSpectralClustering
    from .cluster._discrete import DiscreteNeuralEigenClustering
    from .cluster._neural import NeuralEigenClustering

    kernel = demo_kernel() if kernel is None else kernel
    neural = dict(kernel=kernel, batch_size=batch_size, max_iter=max_iter,
                  hidden_layer_sizes=(128, 128), learning_rate=1e-3, device=device,
                  random_state=random_state, verbose=verbose)
    if name == "eigsh":
        return EigshSpectralClustering(n_clusters, kernel=kernel, random_state=random_state)
    if name == "neural":
        return NeuralEigenClustering(n_clusters, **neural)
    if name == "discrete":
        return DiscreteNeuralEigenClustering(n_clusters, **neural)
    if name == "kmeans":
        return KMeans(n_clusters, n_init=4, random_state=random_state)
    raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")


def format_table(rows: list[dict], *, markdown: bool = False) -> str:
    """The results as an aligned text table (or a Markdown table).

    Parameters
    ----------
    rows : list of dict
        With keys ``method``, ``mean_iou``, ``pixel_accuracy`` (fractions), ``fit_time``,
        ``predict_time`` (seconds).
    markdown : bool, default=False
        Markdown pipes instead of aligned columns.

    Returns
    -------
    str
    """
    header = ["method", "mIoU (%)", "pixel acc (%)", "fit time (s)", "predict time (s)"]
    body = [[r["method"], f"{100 * r['mean_iou']:.1f}", f"{100 * r['pixel_accuracy']:.1f}",
             f"{r['fit_time']:.1f}", f"{r['predict_time']:.2f}"] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*cells) for cells in [header, *body])


def _write_pictures(out: Path, test, results: dict, eigenmaps, n_show: int) -> list[Path]:
    """Overlay grid, per-image overlays, eigenfunction maps and an IoU chart."""
    from PIL import Image

    from .plotting import (
        colorize_labels,
        label_overlay,
        plot_eigenfunctions,
        plot_per_class_iou,
        plot_segmentations,
    )

    written: list[Path] = []
    images, masks = test.images()[:n_show], test.masks()[:n_show]
    preds = {name: r["predictions"][:n_show] for name, r in results.items()}
    fig = plot_segmentations(images, preds, ground_truth=masks, max_images=n_show)
    written.append(out / "overlays.png")
    fig.savefig(written[-1], dpi=90)
    for i, image in enumerate(images):
        Image.fromarray(colorize_labels(masks[i])).save(out / f"image{i}_ground_truth.png")
        written.append(out / f"image{i}_ground_truth.png")
        for name, maps in preds.items():
            path = out / f"image{i}_{name}.png"
            Image.fromarray(label_overlay(image, maps[i])).save(path)
            written.append(path)
    if eigenmaps is not None:
        fig = plot_eigenfunctions(images[0], eigenmaps, n_show=6)
        written.append(out / "eigenfunctions.png")
        fig.savefig(written[-1], dpi=90)
    best = "discrete" if "discrete" in results else next(iter(results))
    fig = plot_per_class_iou(results[best]["per_class_iou"], test.class_names,
                             title=f"{best}: per-class IoU (majority matching)")
    written.append(out / "per_class_iou.png")
    fig.savefig(written[-1], dpi=90)
    return written


def run_demo(out_dir: str | os.PathLike | None = "spectralnet_seg_demo", *,
             config: DemoConfig | None = None, quick: bool = False, verbose: bool = True,
             print_fn=print) -> dict:
    """Run the demo: fit on training mosaics, segment held-out ones, score and draw.

    Parameters
    ----------
    out_dir : path or None, default="spectralnet_seg_demo"
        Folder for ``results.csv``, ``results.md`` and the PNGs (created); None writes
        nothing.
    config : DemoConfig, optional
        Sizes; :class:`DemoConfig` defaults (or :meth:`DemoConfig.quick` with ``quick``).
    quick : bool, default=False
        Use the small configuration.
    verbose : bool, default=True
        Print progress lines and the table through ``print_fn``.
    print_fn : callable, default=print
        Where text goes.

    Returns
    -------
    dict
        ``rows`` (one dict per method: ``method``, ``mean_iou``, ``pixel_accuracy``,
        ``fit_time``, ``predict_time``, ``per_class_iou``), ``table`` (str), ``files`` (written
        paths) and ``config``.
    """
    from .datasets import TextureMosaics
    from .evaluation import evaluate
    from .features import PixelExtractor
    from .segmentation import Segmenter

    cfg = config or (DemoConfig.quick() if quick else DemoConfig())
    say = print_fn if verbose else (lambda *a, **k: None)
    train = TextureMosaics(cfg.n_train, image_size=cfg.image_size, seed=0)
    test = TextureMosaics(cfg.n_test, image_size=cfg.image_size, seed=1)
    train_images = train.images()
    say(f"texture mosaics: {cfg.n_train} training / {cfg.n_test} held-out images of "
        f"{cfg.image_size}x{cfg.image_size}, {train.n_classes} classes; K = {cfg.n_clusters}")
    extractor = PixelExtractor()
    kernel = demo_kernel(cfg.n_neighbors)
    results: dict[str, dict] = {}
    eigenmaps = None
    for name in cfg.methods:
        estimator = make_estimator(name, cfg.n_clusters, kernel=kernel, max_iter=cfg.max_iter,
                                   batch_size=cfg.batch_size, random_state=cfg.random_state,
                                   device="cpu")
        segmenter = Segmenter(extractor, estimator)
        tic = time.perf_counter()
        segmenter.fit(train_images)
        fit_time = time.perf_counter() - tic
        scores = evaluate(segmenter, test, matching="majority", protocol=None,
                          return_predictions=True)
        results[name] = {**scores, "fit_time": fit_time}
        say(f"  {name:<9s} mIoU {100 * scores['mean_iou']:5.1f}   pixel acc "
            f"{100 * scores['pixel_accuracy']:5.1f}   fit {fit_time:5.1f}s")
        if name == "neural":
            eigenmaps = segmenter.transform(test.images()[:1])[0]
    rows = [{"method": name, "mean_iou": r["mean_iou"], "pixel_accuracy": r["pixel_accuracy"],
             "fit_time": r["fit_time"], "predict_time": r["predict_time"],
             "per_class_iou": r["per_class_iou"]} for name, r in results.items()]
    table = format_table(rows)
    say("")
    say(table)
    files: list[Path] = []
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "results.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["method", "mean_iou", "pixel_accuracy", "fit_time_s",
                             "predict_time_s", *[f"iou_{c}" for c in test.class_names]])
            for r in rows:
                writer.writerow([r["method"], f"{r['mean_iou']:.4f}",
                                 f"{r['pixel_accuracy']:.4f}", f"{r['fit_time']:.2f}",
                                 f"{r['predict_time']:.3f}",
                                 *[f"{v:.4f}" for v in np.nan_to_num(r["per_class_iou"])]])
        (out / "results.md").write_text(format_table(rows, markdown=True) + "\n")
        files = [out / "results.csv", out / "results.md"]
        files += _write_pictures(out, test, results, eigenmaps, n_show=min(4, cfg.n_test))
        say(f"\nwrote {len(files)} files to {out}")
    return {"rows": rows, "table": table, "files": files, "config": cfg}
