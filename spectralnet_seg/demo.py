"""The offline demo: four clusterings of the same features on the bundled texture mosaics.

Training-free pixel features ([`PixelExtractor`][spectralnet_seg.features.PixelExtractor]) of a
training
split of mosaics are clustered by

* ``eigsh`` — [`EigshSpectralClustering`][spectralnet_seg.cluster.EigshSpectralClustering], the
exact baseline
  (sparse eigendecomposition of the full graph, Nyström extension for new images);
* ``neural`` — [`NeuralEigenClustering`][NeuralEigenClustering] (NeuralEF eigenfunctions + k-means);
* ``discrete`` — [`DiscreteNeuralEigenClustering`][DiscreteNeuralEigenClustering] (outputs are
cluster assignments);
* ``kmeans`` — scikit-learn's k-means on the same features (best of 10 starts), the usual
  baseline,

the three spectral methods on the *same kernel*: by default the paper's
([`paper_kernel`][spectralnet_seg.kernels.paper_kernel]), a cosine kNN graph of the features plus
α times the per-image pixel graph on ``[r, g, b, λx, λy]`` (α = 1 here, 0.3 in the paper),
which gets the tokens' colours and positions (the token context) from the
[`Segmenter`][spectralnet_seg.segmentation.Segmenter].
The neural estimators train on pairs drawn from that graph, with their own defaults. Held-out
mosaics are segmented out-of-sample and
scored with the many-to-one majority matching; the table (mIoU, pixel accuracy, fit and
predict time) and overlay pictures are written to a folder.
"""

from __future__ import annotations

import csv
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import MOSAIC_KERNELS as KERNELS
from .config import MosaicConfig, mosaic_kernel

__all__ = ["DemoConfig", "make_estimator", "demo_kernel", "run_demo", "format_table",
           "ESTIMATORS", "KERNELS"]

ESTIMATORS = ("eigsh", "neural", "discrete", "kmeans")


@dataclass
class DemoConfig(MosaicConfig):
    """The mosaic task ([`MosaicConfig`][spectralnet_seg.config.MosaicConfig]) and the methods to
    run.

    Attributes
    ----------
    methods : tuple of str
        Which of [`ESTIMATORS`][ESTIMATORS] to run.
    """

    methods: tuple = ESTIMATORS


demo_kernel = mosaic_kernel  # the demo's name for the task's kernel


def make_estimator(name: str, n_clusters: int, *, kernel=None, neural_params=None,
                   device: str = "auto", random_state=0, verbose: bool = False):
    """Build one of the demo's estimators by name, with the demo's settings.

    The estimators come from the package's registry
    ([`spectralnet_seg.cluster.make_estimator`][spectralnet_seg.cluster.make_estimator]); this adds
    the demo's kernel and the
    k-means restarts.

    Parameters
    ----------
    name : {"eigsh", "neural", "discrete", "kmeans"}
        Which estimator.
    n_clusters : int
        Number of clusters.
    kernel : Kernel or str, optional
        Affinity of the spectral methods; by default the default
        [`DemoConfig`][DemoConfig]'s (``DemoConfig().build_kernel()``), as in
        [`run_demo`][run_demo].
    neural_params : dict, optional
        Settings of the neural estimators other than their defaults (none by default).
    device : str, default="auto"
        Device of the neural estimators.
    random_state : int, default=0
        Seed.
    verbose : bool, default=False
        Progress bars of the neural estimators.

    Returns
    -------
    estimator
        Unfitted.

    Examples
    --------
    >>> make_estimator("discrete", 6).n_clusters
    6
    """
    from .cluster import make_estimator as registered_estimator

    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    if name == "kmeans":  # best of 10 starts, the usual baseline
        return registered_estimator("kmeans", n_clusters, n_init=10, random_state=random_state)
    # The kernel run_demo uses with the default DemoConfig (demo_kernel's own defaults are
    # the mosaic task's k = 32, α = 0.3, not the demo's k = 16, α = 1).
    kernel = DemoConfig().build_kernel() if kernel is None else kernel
    if name == "eigsh":
        return registered_estimator("eigsh", n_clusters, kernel=kernel,
                                    random_state=random_state)
    neural = dict(neural_params or {})
    clashes = sorted(set(neural) & {"kernel", "device", "random_state", "verbose"})
    if clashes:  # they were silently overwritten by the arguments of the same names
        raise ValueError(f"neural_params sets {clashes}, which make_estimator takes as its own "
                         "arguments; pass them as make_estimator(..., kernel=..., device=..., "
                         "random_state=..., verbose=...).")
    neural.update(kernel=kernel, device=device, random_state=random_state, verbose=verbose)
    return registered_estimator(name, n_clusters, **neural)


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
    """Overlay grid, per-image overlays, eigenfunction maps and an IoU chart.

    Predictions are drawn as the *classes* their clusters were matched to (the mapping of
    the evaluation), so every method's colours mean the same textures as the ground truth;
    pixels of unmatched clusters show the plain image.
    """
    from PIL import Image

    from .metrics import apply_mapping
    from .plotting import (
        colorize_labels,
        label_overlay,
        plot_eigenfunctions,
        plot_per_class_iou,
        plot_segmentations,
    )

    written: list[Path] = []
    images, masks = test.images()[:n_show], test.masks()[:n_show]
    preds = {name: [apply_mapping(p, r["mapping"]) for p in r["predictions"][:n_show]]
             for name, r in results.items()}
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
        Sizes; [`DemoConfig`][DemoConfig] defaults (or [`DemoConfig.quick`][DemoConfig.quick] with
        ``quick``).
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
    from .segmentation import Segmenter

    cfg = config or (DemoConfig.quick() if quick else DemoConfig())
    if isinstance(cfg.methods, str):  # its letters would be read as method names
        raise ValueError(f"DemoConfig.methods must be a sequence of names, e.g. "
                         f"({cfg.methods!r},), not the string {cfg.methods!r}")
    unknown = [m for m in cfg.methods if m not in ESTIMATORS]
    if unknown or not cfg.methods:
        raise ValueError(f"unknown method(s) {unknown} in DemoConfig.methods; choose from "
                         f"{', '.join(ESTIMATORS)}")
    say = print_fn if verbose else (lambda *a, **k: None)
    train = TextureMosaics(cfg.n_train, image_size=cfg.image_size, seed=0)
    test = TextureMosaics(cfg.n_test, image_size=cfg.image_size, seed=1)
    train_images = train.images()
    say(f"texture mosaics: {cfg.n_train} training / {cfg.n_test} held-out images of "
        f"{cfg.image_size}x{cfg.image_size}, {train.n_classes} classes; K = {cfg.n_clusters}")
    kernel_text = ("cosine kNN feature graph + "
                   f"{cfg.pixel_weight:g} x pixel graph" if cfg.kernel == "paper"
                   else "cosine kNN feature graph")
    say(f"kernel: {kernel_text} (k = {cfg.n_neighbors}); every estimator with its defaults")
    extractor = cfg.build_extractor()
    kernel = cfg.build_kernel()
    results: dict[str, dict] = {}
    eigenmaps = None
    for name in cfg.methods:
        estimator = make_estimator(name, cfg.n_clusters, kernel=kernel,
                                   neural_params=cfg.neural_params(),
                                   random_state=cfg.random_state)
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
    gaps = _discrete_gaps(rows)
    if gaps:
        say(gaps)
    files: list[Path] = []
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = _write_tables(out, rows, test.class_names)
        files += _write_pictures(out, test, results, eigenmaps, n_show=min(4, cfg.n_test))
        # A larger earlier run's extra pictures, and only those: the folder may hold the
        # user's own files (image1_holiday.png was deleted by a looser pattern).
        ours = re.compile(rf"image\d+_(ground_truth|{'|'.join(ESTIMATORS)})\.png")
        for stale in out.glob("image*_*.png"):
            if ours.fullmatch(stale.name) and stale not in files:
                stale.unlink()
        say(f"\nwrote {len(files)} files to {out}")
    return {"rows": rows, "table": table, "files": files, "config": cfg}


def _discrete_gaps(rows: list[dict]) -> str | None:
    """The discrete estimator's mIoU lead over eigsh and k-means, in points (None if absent)."""
    miou = {r["method"]: 100 * r["mean_iou"] for r in rows}
    gaps = [f"{miou['discrete'] - miou[other]:+.1f} vs {other}"
            for other in ("eigsh", "kmeans") if other in miou] if "discrete" in miou else []
    return f"discrete mIoU: {', '.join(gaps)} (points)" if gaps else None


def _write_tables(out: Path, rows: list[dict], class_names) -> list[Path]:
    """``results.csv`` (with per-class IoU) and ``results.md`` under ``out``."""
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", "mean_iou", "pixel_accuracy", "fit_time_s",
                         "predict_time_s", *[f"iou_{c}" for c in class_names]])
        for r in rows:
            writer.writerow([r["method"], f"{r['mean_iou']:.4f}", f"{r['pixel_accuracy']:.4f}",
                             f"{r['fit_time']:.2f}", f"{r['predict_time']:.3f}",
                             # nan: a class absent from truth and prediction (not IoU 0)
                             *["nan" if np.isnan(v) else f"{v:.4f}"
                               for v in r["per_class_iou"]]])
    (out / "results.md").write_text(format_table(rows, markdown=True) + "\n")
    return [out / "results.csv", out / "results.md"]
