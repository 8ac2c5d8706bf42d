"""The argument parser of ``spectralnet-seg``: subcommands, options and their help.

The help of ``segment`` and ``evaluate`` shows the estimators' own defaults, read from the
estimator registry, since an option left out keeps them (see
[`spectralnet_seg.cli`][spectralnet_seg.cli]).
"""

from __future__ import annotations

import argparse

__all__ = ["KERNELS", "build_parser"]

KERNELS = ("paper", "knn")


def _seed(text: str) -> int:
    """A random seed as scikit-learn takes it: an integer in [0, 2**32 - 1]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**32:  # refused now, not after the data are prepared
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 4294967295], got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


# ----------------------------------------------------------------------------- parser
def _defaults_text(parameter: str, names=("neural", "discrete")) -> str:
    """``neural 512, discrete 512``: the estimators' own defaults of one parameter."""
    from .cluster import estimator_defaults

    values = []
    for name in names:
        value = estimator_defaults(name)[parameter]
        values.append(f"{name} {'auto' if value is None else value}")
    return ", ".join(values)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``segment`` and ``evaluate``: extractor, estimator, kernel."""
    import inspect

    from .cluster import list_estimators
    from .kernels import KNNKernel, paper_kernel

    paper = inspect.signature(paper_kernel).parameters
    group = parser.add_argument_group(
        "model", "Options left out keep the estimator's (or kernel's) own default, shown "
                 "in brackets.")
    group.add_argument("--extractor", default="pixel",
                       help="feature extractor: 'pixel' (offline) or 'timm:<model name>' "
                            "(default: pixel)")
    group.add_argument("--checkpoint-path", default=None,
                       help="local timm-format weights file for a timm extractor (no "
                            "download)")
    group.add_argument("--random-init", action="store_true",
                       help="timm extractor with random weights (no download; for tests)")
    group.add_argument("--estimator", choices=list_estimators(), default="eigsh",
                       help="clustering method (default: eigsh, exact and seconds on a photo)")
    group.add_argument("--n-clusters", type=_positive_int, default=8,
                       help="number of clusters K (default: 8)")
    group.add_argument("--kernel", choices=KERNELS, default="paper",
                       help="affinity of the spectral methods: 'paper' = cosine kNN graph of "
                            "the features + pixel graph of each image on colour and position "
                            "(Deng & Luo), 'knn' = a kNN graph of the features alone, the "
                            "estimators' default KNNKernel (Euclidean, binary weights; no "
                            "pixel graph) (default: paper)")
    group.add_argument("--n-neighbors", type=_positive_int, default=None,
                       help="neighbours of the feature kNN graph, capped to the tokens "
                            f"available [paper {paper['n_neighbors'].default}, knn "
                            f"{KNNKernel().n_neighbors}]")
    group.add_argument("--pixel-weight", type=_positive_float, default=None,
                       help="weight alpha of the pixel graph in the 'paper' kernel "
                            f"[{paper['pixel_weight'].default}]")
    group.add_argument("--max-iter", type=_positive_int, default=None,
                       help="largest number of training steps of the neural estimators; "
                            "they stop earlier when their eigenvalue estimates settle "
                            f"[{_defaults_text('max_iter')}]; discrete then fine-tunes for "
                            f"up to [{_defaults_text('fine_tune_iter', ('discrete',))}] more "
                            "steps (k-means: its iterations)")
    group.add_argument("--batch-size", type=_positive_int, default=None,
                       help="graph pairs (or minibatch tokens) per training step of the "
                            f"neural estimators [{_defaults_text('batch_size')}]")
    group.add_argument("--learning-rate", type=_positive_float, default=None,
                       help="Adam step of the neural estimators "
                            f"[{_defaults_text('learning_rate')}]")
    group.add_argument("--diffusion-steps", type=_positive_int, default=None,
                       help="random-walk steps t of the diffusion the neural estimators "
                            f"train on [{_defaults_text('diffusion_steps')}]")
    group.add_argument("--orthogonality-weight", type=_positive_float, default=None,
                       help="beta of the neural estimators' loss [neural 1.0, discrete "
                            "min(20 / K, 0.1)]")
    group.add_argument("--upsample", choices=("bilinear", "nearest"), default="bilinear",
                       help="token scores to full resolution (default: bilinear)")
    group.add_argument("--crf", action="store_true",
                       help="dense-CRF post-processing (needs spectralnet-seg[crf])")
    group.add_argument("--device", default=None,
                       help="cpu, cuda, cuda:N, mps or auto, for a timm extractor and the "
                            f"neural estimators [{_defaults_text('device')}]")
    group.add_argument("--seed", type=_seed, default=None,
                       help="random seed of the estimator [not seeded]")
    group.add_argument("--quiet", action="store_true",
                       help="no progress bars or stage messages")


class _OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help shows the usage)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spectralnet-seg`` (subcommands and their options)."""
    parser = _OneLineErrors(
        prog="spectralnet-seg",
        description="Unsupervised semantic segmentation by spectral clustering (eigsh "
                    "baseline and neural eigenfunctions).")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo_parser(sub)

    seg = sub.add_parser(
        "segment", help="segment image files; writes label maps + overlays",
        description="Fits one clustering over all the images (a single photo: its own "
                    "regions; several: each brought to the first one's size, with a warning "
                    "when their aspect ratios differ) and writes, per image, NAME_labels.png "
                    "(cluster ids, 8/16-bit grey), NAME_labels_color.png (the same ids as a palette picture; an "
                    "RGB picture when K > 256) and NAME_overlay.png. Inputs sharing a file "
                    "name get NAME-2, NAME-3, ...")
    seg.add_argument("images", nargs="+", metavar="IMAGES_OR_DIR",
                     help="image files and/or folders of images (all are used to fit)")
    seg.add_argument("--out", required=True, help="output folder")
    seg.add_argument("--overwrite", action="store_true",
                     help="replace output files of an earlier run (refused otherwise)")
    _add_model_options(seg)

    ev = sub.add_parser("evaluate", help="fit on one split of a dataset, score another")
    ev.add_argument("--dataset", required=True,
                    help="dataset name (see spectralnet_seg.datasets.list_datasets)")
    ev.add_argument("--root", default=None, help="dataset folder (not needed for 'mosaics')")
    ev.add_argument("--fit-split", default="train", help="split to fit on (default: train)")
    ev.add_argument("--eval-split", default="val", help="split to score (default: val)")
    ev.add_argument("--max-fit-images", type=_positive_int, default=None)
    ev.add_argument("--max-images", type=_positive_int, default=None,
                    help="score only the first N evaluation images")
    ev.add_argument("--matching", choices=("majority", "hungarian"), default="majority")
    ev.add_argument("--protocol", choices=("reco", "sliding", "none"), default="reco",
                    help="ReCo crop (default), sliding windows, or the images as they are")
    ev.add_argument("--crop-size", type=_positive_int, default=320)
    ev.add_argument("--out", default=None, help="folder for scores.json and an IoU chart")
    ev.add_argument("--overwrite", action="store_true",
                    help="replace scores of an earlier run in --out (refused otherwise)")
    _add_model_options(ev)

    _add_extract_parser(sub)
    return parser


def _add_demo_parser(sub) -> None:
    """``demo``: the offline comparison on the mosaic task (its defaults in the help)."""
    from .config import MOSAIC_KERNELS, MosaicConfig

    demo = sub.add_parser("demo", help="offline comparison on the bundled texture mosaics")
    demo.add_argument("--out", default="spectralnet_seg_demo",
                      help="output folder (default: ./spectralnet_seg_demo)")
    demo_defaults, quick_defaults = MosaicConfig(), MosaicConfig.quick()
    demo.add_argument("--n-images", type=_positive_int, default=None,
                      help=f"training mosaics (default: {demo_defaults.n_train}, or "
                           f"{quick_defaults.n_train} with --quick)")
    demo.add_argument("--kernel", choices=MOSAIC_KERNELS, default=None,
                      help="affinity of the three spectral methods (default: "
                           f"{demo_defaults.kernel})")
    demo.add_argument("--seed", type=_seed, default=None,
                      help=f"seed of the estimators (default: {demo_defaults.random_state})")
    demo.add_argument("--quick", action="store_true", help="small, fast configuration")


def _add_extract_parser(sub) -> None:
    """``extract``: features of images into resumable ``.npy`` shards + a manifest."""
    ex = sub.add_parser(
        "extract", help="extract features of images into resumable .npy shards",
        description="Writes shard_NNNNN.npy files (tokens x features, plus _colors and "
                    "_positions side files) and manifest.json into --out. Rerunning the same "
                    "command after an interruption skips the finished shards.")
    ex.add_argument("images", nargs="+", metavar="IMAGES_OR_DIR",
                    help="image files and/or folders of images")
    ex.add_argument("--recursive", action="store_true", help="also search sub-folders")
    ex.add_argument("--extractor", default="pixel",
                    help="'pixel' (offline) or 'timm:<model name>' (default: pixel)")
    ex.add_argument("--checkpoint-path", default=None,
                    help="local weights file for a timm extractor (no download)")
    ex.add_argument("--out", required=True, help="output folder of the shards")
    ex.add_argument("--shard-size", type=_positive_int, default=64,
                    help="images per shard (default: 64)")
    ex.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                    help="storage type of the features (default: float32)")
    ex.add_argument("--no-resume", action="store_true",
                    help="fail instead of skipping finished shards")
    ex.add_argument("--overwrite", action="store_true",
                    help="delete earlier shards in --out and start over")
