"""Gallery: scikit-image's photographs and the coins image segmented by every method.

Each image (``coffee``, ``astronaut``, ``chelsea``, ``rocket`` and the grey ``coins``,
stacked to three channels) is downscaled so that its longer side has ``--size`` pixels and
segmented by :func:`spectralnet_seg.segmentation.segment_image` — the package's one-photo
call, with its defaults (``extractor="pixel"``, the paper's kernel; ``--max-iter`` caps the
neural estimators' training steps, and the discrete one's fine-tuning, for a faster build) —
once per method:
``eigsh``, ``neural``, ``discrete`` and ``kmeans`` (k-means on the same pixel features, no
graph). One PNG per image shows the photo and the partitions side by side, with the fit time
and the normalised cut under each picture.

The normalised cut is scored on one graph per image that no method builds, so that every
method, k-means included, is measured alike: the image's 4-neighbour pixel graph weighted
``exp(-β · |colour difference| / std) + 1e-6`` (β = 10, the weighting of scikit-learn's
coins example, on RGB in [0, 1]), cut by the full-resolution label map that
``segment_image`` returns. Lower is better: regions that follow the image's edges.

``benchmarks/results/gallery/`` gets the CSV, the PNGs and a Markdown summary; with
``--docs-dir docs`` the PNGs are also copied to ``docs/gallery/`` and the generated block of
``docs/gallery.md`` is rewritten from the CSV (``benchmarks/publish.py`` renders it, and the
test suite fails when it is stale). ``--quick`` runs 48-pixel images with the neural
estimators' training (and the discrete one's fine-tuning) cut to a few steps: a smoke test of
the whole path, not a gallery.

Usage::

    python benchmarks/gallery.py --docs-dir docs    # under a minute on 2 idle cores
    python benchmarks/gallery.py --quick
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

NAME = "gallery"
COLUMNS = ["image", "method", "height", "width", "n_clusters", "regions", "ncut", "time_s"]
METHODS = ("eigsh", "neural", "discrete", "kmeans")
# Regions per image: about the number of things a viewer would name in it.
IMAGES = {"coffee": 6, "astronaut": 8, "chelsea": 5, "rocket": 6, "coins": 12}
FULL_SIZE, QUICK_SIZE = 160, 48
# Training steps of the neural estimators (and fine-tuning steps of the discrete one): the
# full gallery keeps their defaults (label-free stopping); --quick caps them for a smoke
# test, and --max-iter N caps them in either mode.
QUICK_MAX_ITER = 20
BETA, EPS = 10.0, 1e-6


# ----------------------------------------------------------------------------- data
def load(name: str, size: int) -> np.ndarray:
    """scikit-image's ``name`` image, RGB uint8, longer side ``size`` pixels."""
    from skimage import data
    from skimage.transform import resize

    image = getattr(data, name)()
    if image.ndim == 2:  # coins: grey
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3]
    h, w = image.shape[:2]
    scale = size / max(h, w)
    shape = (max(8, round(h * scale)), max(8, round(w * scale)))
    return (resize(image, shape, anti_aliasing=True) * 255).round().astype(np.uint8)


def pixel_graph(image: np.ndarray):
    """4-neighbour graph of the pixels, ``exp(-β |Δcolour| / std) + ε`` (no self-loops).

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8

    Returns
    -------
    scipy.sparse.csr_matrix of shape (H * W, H * W), symmetric
    """
    import scipy.sparse as sp

    rgb = image.astype(np.float64) / 255
    h, w = rgb.shape[:2]
    index = np.arange(h * w).reshape(h, w)
    rows, cols, diffs = [], [], []
    for a, b, d in ((index[:, :-1], index[:, 1:], rgb[:, 1:] - rgb[:, :-1]),
                    (index[:-1], index[1:], rgb[1:] - rgb[:-1])):
        rows.append(a.ravel())
        cols.append(b.ravel())
        diffs.append(np.linalg.norm(d, axis=-1).ravel())
    rows, cols, diffs = map(np.concatenate, (rows, cols, diffs))
    weights = np.exp(-BETA * diffs / max(diffs.std(), 1e-12)) + EPS
    graph = sp.coo_matrix((weights, (rows, cols)), shape=(h * w, h * w))
    return (graph + graph.T).tocsr()


# ----------------------------------------------------------------------------- running
def segment(image: np.ndarray, method: str, n_clusters: int, *, seed: int,
            max_iter: int | None, fine_tune_iter: int | None) -> tuple[np.ndarray, float]:
    """``segment_image`` with the method's defaults (training steps capped where not None);
    the label map and the seconds it took."""
    from spectralnet_seg.segmentation import segment_image

    params = {}
    if method in ("neural", "discrete") and max_iter is not None:
        params["max_iter"] = max_iter
    if method == "discrete" and fine_tune_iter is not None:
        params["fine_tune_iter"] = fine_tune_iter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # capped neighbour counts, early-stopping notes
        tic = time.perf_counter()
        labels = segment_image(image, n_clusters, method=method, random_state=seed, **params)
        return labels, time.perf_counter() - tic


def run_image(name: str, n_clusters: int, methods, *, size: int,
              **fit) -> tuple[np.ndarray, list[dict], dict]:
    """Segment one image with every method: the image, its rows and its label maps."""
    from spectralnet_seg.metrics import normalized_cut

    image = load(name, size)
    graph = pixel_graph(image)
    rows, label_maps = [], {}
    for method in methods:
        labels, seconds = segment(image, method, n_clusters, **fit)
        rows.append({"image": name, "method": method, "height": image.shape[0],
                     "width": image.shape[1], "n_clusters": n_clusters,
                     "regions": len(np.unique(labels)),
                     "ncut": normalized_cut(graph, labels.ravel()), "time_s": seconds})
        label_maps[method] = labels
        print(f"  {name:<10s} {method:<9s} {seconds:7.2f} s  ncut {rows[-1]['ncut']:.4f}  "
              f"{rows[-1]['regions']} regions", flush=True)
    return image, rows, label_maps


def plot(name: str, image: np.ndarray, rows: list[dict], label_maps: dict):
    """The photo and its partitions in one row, time and normalised cut under each."""
    from spectralnet_seg.plotting import label_overlay

    plt = common.plt()
    n = len(label_maps) + 1
    h, w = image.shape[:2]
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.4 * h / w + 0.7), squeeze=False,
                             layout="constrained")
    axes = axes[0]
    axes[0].imshow(image)
    axes[0].set_title(f"{name} ({w} x {h})", fontsize=8)
    by_method = {r["method"]: r for r in rows}
    for ax, (method, labels) in zip(axes[1:], label_maps.items(), strict=True):
        row = by_method[method]
        ax.imshow(label_overlay(image, labels.astype(np.int64), alpha=0.55, ignore_index=None))
        ax.set_title(f"{method}, K = {row['n_clusters']}", fontsize=8)
        ax.set_xlabel(f"Ncut {row['ncut']:.3f} · {row['time_s']:.1f} s", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    return fig


def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=list(IMAGES), choices=list(IMAGES),
                        help="images to segment (default: all)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        help="methods (default: all)")
    parser.add_argument("--max-iter", type=int, default=None,
                        help=f"cap on the training steps of neural and discrete (default: "
                             f"their own; {QUICK_MAX_ITER} quick); the discrete one then "
                             "fine-tunes for as many")
    parser.add_argument("--size", type=int, default=None,
                        help=f"longer side in pixels (default {FULL_SIZE}; {QUICK_SIZE} quick)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Build the gallery; return ``{"rows", "files"}``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    size = args.size or (QUICK_SIZE if args.quick else FULL_SIZE)
    max_iter = args.max_iter or (QUICK_MAX_ITER if args.quick else None)
    fit = {"seed": args.seed, "max_iter": max_iter, "fine_tune_iter": max_iter}
    info = common.machine_info()
    rows, figures = [], []
    plt = common.plt()
    tic = time.perf_counter()
    for name in args.images:
        image, image_rows, label_maps = run_image(name, IMAGES[name], args.methods, size=size,
                                                  **fit)
        rows += image_rows
        figures.append((f"{name}.png", plot(name, image, image_rows, label_maps)))
    total = time.perf_counter() - tic
    print()
    print(common.text_table(rows, COLUMNS))
    notes = [
        f"`segment_image(image, K, method=..., random_state={args.seed})` with the package's "
        f"defaults on each image downscaled to {size} pixels on its longer side"
        + ("" if max_iter is None else
           f", except the training of `neural` and `discrete`: at most {max_iter} steps "
           f"(`max_iter`, default 5000) and {max_iter} fine-tuning steps of `discrete` "
           "(`fine_tune_iter`, default 500)")
        + ". `ncut`: normalised cut of the full-resolution label map on the image's "
        f"4-neighbour pixel graph, weights exp(−{BETA:g} · |RGB difference| / std) + {EPS:g} "
        "(the same graph for every method; lower is better); `regions`: regions the map uses "
        f"(of K = `n_clusters`); `time_s`: one call, extraction included. Whole gallery: "
        f"{total:.0f} s."]
    out = common.output_dir(args, NAME)
    files = common.write_results(out, NAME, info=info, mode="quick" if args.quick else "full",
                                 argv=argv, title=__doc__.splitlines()[0],
                                 tables=[("", rows, COLUMNS)], notes=notes, figures=figures)
    for _, figure in figures:
        plt.close(figure)
    for path in files:
        if path.suffix == ".png":
            shrink_png(path)
    if args.docs_dir is not None:
        publish_docs(files, Path(args.docs_dir))
    print(f"\nwrote {', '.join(str(p) for p in files)}")
    return {"rows": rows, "files": files}


def shrink_png(path: Path, colors: int = 96, width: int = 1100) -> None:
    """Rewrite a PNG with at most ``width`` pixels across and a ``colors`` palette.

    The gallery's PNGs are committed twice (results and docs): full-colour they weigh ~300 KB
    each, a palette of a hundred colours keeps the label overlays legible at a fifth of that.
    """
    from PIL import Image

    with Image.open(path) as im:
        image = im.convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)),
                             Image.Resampling.LANCZOS)
    image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def publish_docs(files, docs_dir: Path) -> None:
    """Copy the PNGs to ``<docs_dir>/gallery/`` and regenerate ``<docs_dir>/gallery.md``."""
    import shutil

    import publish

    target = docs_dir / NAME
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        if path.suffix == ".png":
            shutil.copy2(path, target / path.name)
    page = docs_dir / "gallery.md"
    if page.exists() and publish.render_page(page):
        print(f"updated {page}")


if __name__ == "__main__":
    main()
