"""The ``spectralnet-seg`` command: ``demo``, ``segment``, ``evaluate`` and ``extract``.

::

    spectralnet-seg demo [--out DIR] [--quick]
    spectralnet-seg segment a.jpg b.png --extractor pixel --estimator discrete \\
        --n-clusters 8 --out segs/
    spectralnet-seg evaluate --dataset pascal_context --root ~/data --extractor timm:NAME \\
        --estimator discrete --n-clusters 59
    spectralnet-seg extract images/*.jpg --extractor timm:NAME --out features/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


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


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``segment`` and ``evaluate``: extractor, estimator, kernel."""
    from .demo import ESTIMATORS, KERNELS, DemoConfig

    group = parser.add_argument_group("model")
    group.add_argument("--extractor", default="pixel",
                       help="feature extractor: 'pixel' (offline) or 'timm:<model name>' "
                            "(default: pixel)")
    group.add_argument("--checkpoint-path", default=None,
                       help="local timm-format weights file for a timm extractor (no "
                            "download)")
    group.add_argument("--random-init", action="store_true",
                       help="timm extractor with random weights (no download; for tests)")
    group.add_argument("--estimator", choices=ESTIMATORS, default="discrete",
                       help="clustering method (default: discrete)")
    group.add_argument("--n-clusters", type=_positive_int, default=8,
                       help="number of clusters K (default: 8)")
    defaults = DemoConfig()
    group.add_argument("--kernel", choices=KERNELS, default=defaults.kernel,
                       help="affinity of the spectral methods: 'paper' = cosine kNN graph of "
                            "the features + pixel graph of each image on colour and position "
                            "(Deng & Luo), 'knn' = the feature graph alone (default: "
                            f"{defaults.kernel})")
    group.add_argument("--n-neighbors", type=_positive_int, default=defaults.n_neighbors,
                       help="neighbours of the feature kNN graph (default: "
                            f"{defaults.n_neighbors})")
    group.add_argument("--pixel-weight", type=_positive_float, default=defaults.pixel_weight,
                       help="weight alpha of the pixel graph in the 'paper' kernel (default: "
                            f"{defaults.pixel_weight})")
    group.add_argument("--max-iter", type=_positive_int, default=defaults.max_iter,
                       help="training steps of the neural estimators (default: "
                            f"{defaults.max_iter})")
    group.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size,
                       help="minibatch size (tokens) of the neural estimators; with the "
                            "'paper' kernel it should hold whole images, since the pixel graph "
                            f"only links tokens of one image (default: {defaults.batch_size})")
    group.add_argument("--learning-rate", type=_positive_float,
                       default=defaults.learning_rate,
                       help=f"Adam step of the neural estimators (default: "
                            f"{defaults.learning_rate})")
    group.add_argument("--diffusion-steps", type=_positive_int,
                       default=defaults.diffusion_steps,
                       help="power t of the minibatch operator the neural estimators train "
                            f"on (default: {defaults.diffusion_steps})")
    group.add_argument("--orthogonality-weight", type=_positive_float,
                       default=defaults.orthogonality_weight,
                       help="beta of the neural estimators' loss (default: "
                            f"{defaults.orthogonality_weight})")
    group.add_argument("--upsample", choices=("bilinear", "nearest"), default="bilinear")
    group.add_argument("--crf", action="store_true",
                       help="dense-CRF post-processing (needs spectralnet-seg[crf])")
    group.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    group.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spectralnet-seg`` (subcommands and their options)."""
    from .demo import KERNELS, DemoConfig

    parser = argparse.ArgumentParser(
        prog="spectralnet-seg",
        description="Unsupervised semantic segmentation by spectral clustering (eigsh "
                    "baseline and neural eigenfunctions).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="offline comparison on the bundled texture mosaics")
    demo.add_argument("--out", default="spectralnet_seg_demo",
                      help="output folder (default: ./spectralnet_seg_demo)")
    demo_defaults, quick_defaults = DemoConfig(), DemoConfig.quick()
    demo.add_argument("--n-images", type=_positive_int, default=None,
                      help=f"training mosaics (default: {demo_defaults.n_train}, or "
                           f"{quick_defaults.n_train} with --quick)")
    demo.add_argument("--kernel", choices=KERNELS, default=None,
                      help="affinity of the three spectral methods (default: "
                           f"{demo_defaults.kernel})")
    demo.add_argument("--seed", type=int, default=None,
                      help=f"seed of the estimators (default: {demo_defaults.random_state})")
    demo.add_argument("--quick", action="store_true", help="small, fast configuration")

    seg = sub.add_parser("segment", help="segment image files; writes label maps + overlays")
    seg.add_argument("images", nargs="+", help="image files (all are used to fit)")
    seg.add_argument("--out", required=True, help="output folder")
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
    _add_model_options(ev)

    _add_extract_parser(sub)
    return parser


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


def _make_extractor(args):
    from .features import make_extractor

    params = {}
    random_init = getattr(args, "random_init", False)
    if args.checkpoint_path is not None or random_init:
        if not args.extractor.startswith("timm:"):
            raise ValueError("--checkpoint-path and --random-init only apply to timm "
                             "extractors ('--extractor timm:<model name>')")
        # A local file replaces the hub weights: nothing is downloaded.
        params["pretrained"] = False
        if args.checkpoint_path is not None:
            params["checkpoint_path"] = args.checkpoint_path
    return make_extractor(args.extractor, **params)


def _make_segmenter(args):
    from dataclasses import replace

    from .demo import DemoConfig, demo_kernel, make_estimator
    from .segmentation import Segmenter

    kernel = demo_kernel(args.n_neighbors, kind=args.kernel, pixel_weight=args.pixel_weight)
    neural = replace(DemoConfig(), max_iter=args.max_iter, batch_size=args.batch_size,
                     learning_rate=args.learning_rate, diffusion_steps=args.diffusion_steps,
                     orthogonality_weight=args.orthogonality_weight).neural_params()
    estimator = make_estimator(args.estimator, args.n_clusters, kernel=kernel,
                               neural_params=neural, device=args.device,
                               random_state=args.seed)
    return Segmenter(_make_extractor(args), estimator, upsample=args.upsample,
                     crf=True if args.crf else None)


def _cmd_demo(args) -> int:
    from dataclasses import replace

    from .demo import DemoConfig, run_demo

    config = DemoConfig.quick() if args.quick else DemoConfig()
    if args.n_images is not None:
        config = replace(config, n_train=args.n_images)
    if args.kernel is not None:
        config = replace(config, kernel=args.kernel)
    if args.seed is not None:
        config = replace(config, random_state=args.seed)
    run_demo(args.out, config=config)
    return 0


def _cmd_segment(args) -> int:
    from PIL import Image

    from .images import load_image
    from .plotting import save_overlay

    for path in args.images:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image file not found: {path}")
    segmenter = _make_segmenter(args)
    label_maps = segmenter.fit_predict(args.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = "uint8" if segmenter.n_labels_ <= 256 else "uint16"
    for path, labels in zip(args.images, label_maps, strict=True):
        stem = Path(path).stem
        Image.fromarray(labels.astype(dtype)).save(out / f"{stem}_labels.png")
        save_overlay(out / f"{stem}_overlay.png", load_image(path), labels)
    print(f"segmented {len(label_maps)} images into {segmenter.n_labels_} clusters; "
          f"label maps and overlays in {out}")
    return 0


def _dataset(name: str, root, split: str):
    from .datasets import make_dataset

    if name == "mosaics":
        # The bundled benchmark has no folder: splits are different generator seeds.
        return make_dataset("mosaics", seed={"train": 0, "val": 1, "test": 2}.get(split, 0))
    return make_dataset(name, root, split=split)


def _cmd_evaluate(args) -> int:
    from .evaluation import evaluate
    from .plotting import plot_per_class_iou

    if args.dataset != "mosaics" and args.root is None:
        raise ValueError(f"--root is required for dataset {args.dataset!r}")
    protocol = None if args.protocol == "none" else args.protocol
    fit_data = _dataset(args.dataset, args.root, args.fit_split)
    eval_data = _dataset(args.dataset, args.root, args.eval_split)
    n_fit = len(fit_data) if args.max_fit_images is None else min(len(fit_data),
                                                                  args.max_fit_images)
    segmenter = _make_segmenter(args)

    def fit_image(i):
        image, mask = fit_data[i]
        if protocol in ("reco", "sliding"):
            from .datasets import reco_protocol

            image, _ = reco_protocol(image, mask, size=args.crop_size)
        return image

    segmenter.fit([fit_image(i) for i in range(n_fit)])
    scores = evaluate(segmenter, eval_data, matching=args.matching, protocol=protocol,
                      crop_size=args.crop_size, max_images=args.max_images)
    print(f"{args.dataset} ({scores['n_images']} images, {args.matching} matching, protocol "
          f"{scores['protocol']}): mIoU {100 * scores['mean_iou']:.1f}, pixel accuracy "
          f"{100 * scores['pixel_accuracy']:.1f}")
    for name, iou in zip(scores["class_names"], scores["per_class_iou"], strict=True):
        print(f"  {name:<20s} {100 * iou:5.1f}")
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        summary = {k: scores[k] for k in ("pixel_accuracy", "mean_iou", "matching", "protocol",
                                          "n_images", "n_clusters", "class_names")}
        summary["per_class_iou"] = [None if v != v else float(v)
                                    for v in scores["per_class_iou"]]
        summary["mapping"] = scores["mapping"].tolist()
        (out / "scores.json").write_text(json.dumps(summary, indent=2))
        plot_per_class_iou(scores["per_class_iou"], scores["class_names"],
                           title=f"{args.dataset}: mIoU {100 * scores['mean_iou']:.1f}"
                           ).savefig(out / "per_class_iou.png", dpi=90)
    return 0


def _cmd_extract(args) -> int:
    from .data import extract_to_shards, list_image_files

    files = list_image_files(args.images, recursive=args.recursive)
    manifest = extract_to_shards(_make_extractor(args), [str(f) for f in files], args.out,
                                 shard_size=args.shard_size, resume=not args.no_resume,
                                 overwrite=args.overwrite, dtype=args.dtype, verbose=True)
    print(f"extracted {manifest.n_rows} tokens of {manifest.n_images} images "
          f"({manifest.n_features} features) into {manifest.n_shards} shards in {args.out}")
    return 0


_COMMANDS = {"demo": _cmd_demo, "segment": _cmd_segment, "evaluate": _cmd_evaluate,
             "extract": _cmd_extract}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spectralnet-seg``; returns the exit status.

    Errors a user can fix (missing files, bad values) are printed as one line on stderr with
    exit status 2, without a traceback.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (``sys.argv[1:]`` when None).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"spectralnet-seg {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
