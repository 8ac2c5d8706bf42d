"""The ``spectralnet-seg`` command: ``demo``, ``segment``, ``evaluate`` and ``extract``.

::

    spectralnet-seg segment photo.jpg --n-clusters 8 --out segs/
    spectralnet-seg segment a.jpg b.png --extractor pixel --estimator discrete --out segs/
    spectralnet-seg evaluate --dataset pascal_context --root ~/data --extractor timm:NAME \\
        --estimator discrete --n-clusters 59
    spectralnet-seg extract images/*.jpg --extractor timm:NAME --out features/
    spectralnet-seg demo [--out DIR] [--quick]

``segment`` and ``evaluate`` build their estimator from the registry
([`spectralnet_seg.cluster.make_estimator`][spectralnet_seg.cluster.make_estimator]): an option left
out keeps the estimator's
own default, which ``--help`` shows. Arguments, output folders, the device and the feature
extractor are checked before any work; every error is one line on stderr, exit status 2.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from ._cli_parser import build_parser

__all__ = ["main", "build_parser"]

# CLI option -> estimator parameter, for the options that only some estimators take.
_ESTIMATOR_OPTIONS = {
    "max_iter": "--max-iter", "batch_size": "--batch-size", "learning_rate": "--learning-rate",
    "diffusion_steps": "--diffusion-steps", "orthogonality_weight": "--orthogonality-weight",
    "device": "--device", "random_state": "--seed",
}


# ----------------------------------------------------------------------------- building
def _make_extractor(args):
    """The feature extractor; a timm backbone runs once on a blank image (weights load now)."""
    from ._cli_checks import check_extractor
    from .features import make_extractor

    params = {}
    random_init = getattr(args, "random_init", False)
    if args.checkpoint_path is not None and random_init:  # the checkpoint would win silently
        raise ValueError("--checkpoint-path and --random-init exclude each other: the first "
                         "loads weights from a file, the second keeps random ones")
    if args.checkpoint_path is not None or random_init:
        if not args.extractor.startswith("timm:"):
            raise ValueError("--checkpoint-path and --random-init only apply to timm "
                             "extractors ('--extractor timm:<model name>')")
        # A local file replaces the hub weights: nothing is downloaded.
        params["pretrained"] = False
        if args.checkpoint_path is not None:
            params["checkpoint_path"] = args.checkpoint_path
    device = getattr(args, "device", None)
    if device is not None and args.extractor.startswith("timm:"):
        params["device"] = device
    extractor = make_extractor(args.extractor, **params)
    if args.extractor.startswith("timm:"):  # a backbone whose weights load on first use
        check_extractor(extractor, name=args.extractor, checkpoint_path=args.checkpoint_path)
    return extractor


def _make_kernel(args):
    from .kernels import make_kernel

    params = {}
    if args.n_neighbors is not None:
        params["n_neighbors"] = args.n_neighbors
    if args.pixel_weight is not None:
        if args.kernel != "paper":
            raise ValueError("--pixel-weight only applies to --kernel paper")
        params["pixel_weight"] = args.pixel_weight
    return make_kernel(args.kernel, **params)


def _make_estimator(args, *, single_image: bool = False):
    """The estimator from the registry; options left out keep its own defaults."""
    from .cluster import estimator_defaults, make_estimator

    defaults = estimator_defaults(args.estimator)
    given = {param: getattr(args, option[2:].replace("-", "_"))
             for param, option in _ESTIMATOR_OPTIONS.items()}
    params = {p: v for p, v in given.items() if v is not None}
    needs_device = args.extractor.startswith("timm:")  # the extractor takes --device
    unused = [_ESTIMATOR_OPTIONS[p] for p in params if p not in defaults
              and not (p == "device" and needs_device)]
    if unused:
        raise ValueError(f"{', '.join(unused)}: not used by --estimator {args.estimator} "
                         "(it has no such parameter)")
    params = {p: v for p, v in params.items() if p in defaults}
    if "kernel" in defaults:
        params["kernel"] = _make_kernel(args)
    elif args.n_neighbors is not None or args.pixel_weight is not None:
        raise ValueError(f"--n-neighbors and --pixel-weight do not apply to --estimator "
                         f"{args.estimator}, which uses no kernel")
    if "verbose" in defaults and args.estimator != "kmeans":  # KMeans prints per iteration
        params["verbose"] = not args.quiet
    if "embedding_norm" in defaults and single_image:
        # One photo: the same choice as segment_image (the row scaling with the lower cut).
        params["embedding_norm"] = "auto"
    return make_estimator(args.estimator, args.n_clusters, **params)


def _make_segmenter(args, *, single_image: bool = False):
    """Extractor, estimator and Segmenter, each validated before any image is read."""
    from ._cli_checks import check_crf, check_device
    from .segmentation import Segmenter

    if args.n_neighbors is None:  # the default k is documented as capped to the tokens
        warnings.filterwarnings("ignore", message=".*exceed n_samples - 1", category=UserWarning)
    check_device(args.device)
    check_crf(args.crf)
    estimator = _make_estimator(args, single_image=single_image)
    return Segmenter(_make_extractor(args), estimator, upsample=args.upsample,
                     crf=True if args.crf else None, verbose=not args.quiet)


# ----------------------------------------------------------------------------- commands
def _cmd_demo(args) -> int:
    from dataclasses import replace

    from ._cli_checks import check_output_folder
    from .demo import DemoConfig, run_demo

    check_output_folder(args.out)
    config = DemoConfig.quick() if args.quick else DemoConfig()
    if args.n_images is not None:
        config = replace(config, n_train=args.n_images)
    if args.kernel is not None:
        config = replace(config, kernel=args.kernel)
    if args.seed is not None:
        config = replace(config, random_state=args.seed)
    run_demo(args.out, config=config)
    return 0


def _say(args, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def _cmd_segment(args) -> int:
    from ._cli_checks import check_output_folder, checked_image_files, output_names
    from ._cli_checks import refuse_existing as refuse
    from .images import load_image
    from .plotting import save_label_map, save_overlay

    images = checked_image_files(args.images)  # folders expanded, every file readable
    out = check_output_folder(args.out)  # after the inputs: a failed run leaves no folder
    suffixes = ("_labels.png", "_labels_color.png", "_overlay.png")
    # With --out inside an input folder, an earlier run's outputs are not new inputs.
    images = [path for path in images
              if not (Path(path).resolve().parent == out.resolve()
                      and Path(path).name.endswith(suffixes))]
    if not images:
        raise ValueError(f"the only images in {args.images} are this command's own outputs "
                         f"in {out}; pass the photos to segment.")
    names = output_names(images)
    if not args.overwrite:
        refuse([out / f"{name}{suffix}" for name in names for suffix in suffixes])
    segmenter = _make_segmenter(args, single_image=len(images) == 1)
    for path, name in zip(images, names, strict=True):
        if name != Path(path).stem:
            _say(args, f"note: {path} shares its file name with an earlier input; its "
                       f"results are named {name}_*.png")
    _say(args, f"fitting {args.estimator} (K = {args.n_clusters}) on {len(images)} "
               f"image(s)")
    label_maps = segmenter.fit_predict(images)
    for path, name, labels in zip(images, names, label_maps, strict=True):
        save_label_map(out / f"{name}_labels.png", labels)
        save_label_map(out / f"{name}_labels_color.png", labels, palette=True)
        save_overlay(out / f"{name}_overlay.png", load_image(path), labels,
                     ignore_index=None)  # cluster ids: 255 is a cluster, not "ignore"
    print(f"segmented {len(label_maps)} images into {segmenter.n_labels_} clusters; "
          f"label maps and overlays in {out}")
    return 0


# The bundled benchmark has no folder: its splits are different generator seeds.
_MOSAIC_SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def _dataset(name: str, root, split: str):
    from .datasets import make_dataset

    if name == "mosaics":
        return make_dataset("mosaics", seed=_MOSAIC_SPLIT_SEEDS[split])
    return make_dataset(name, root, split=split)


def _write_scores(out: Path, scores: dict, dataset: str) -> None:
    from .plotting import plot_per_class_iou

    summary = {k: scores[k] for k in ("pixel_accuracy", "mean_iou", "matching", "protocol",
                                      "n_images", "n_clusters", "class_names")}
    # Strict JSON has no NaN: an undefined score (nothing scored) is null, as per class.
    for key in ("pixel_accuracy", "mean_iou"):
        summary[key] = None if summary[key] != summary[key] else float(summary[key])
    summary["per_class_iou"] = [None if v != v else float(v) for v in scores["per_class_iou"]]
    summary["mapping"] = scores["mapping"].tolist()
    (out / "scores.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
    plot_per_class_iou(scores["per_class_iou"], scores["class_names"],
                       title=f"{dataset}: mIoU {100 * scores['mean_iou']:.1f}"
                       ).savefig(out / "per_class_iou.png", dpi=90)


def _cmd_evaluate(args) -> int:
    from ._cli_checks import check_output_folder, refuse_existing
    from .datasets._base import DATASETS
    from .evaluation import evaluate

    DATASETS.entry(args.dataset)  # a misspelt name is named as such, before asking for --root
    if args.dataset != "mosaics" and args.root is None:
        raise ValueError(f"--root is required for dataset {args.dataset!r}")
    if args.dataset == "mosaics":
        # A typo must not silently score the training split (seed 0).
        for flag, split in (("--fit-split", args.fit_split), ("--eval-split", args.eval_split)):
            if split not in _MOSAIC_SPLIT_SEEDS:
                raise ValueError(f"{flag} {split!r}: the mosaics have the splits "
                                 f"{', '.join(_MOSAIC_SPLIT_SEEDS)}")
        if args.root is not None:
            raise ValueError("--root does not apply to the bundled mosaics (they are "
                             "generated); leave it out")
    out = None
    if args.out is not None:
        out = check_output_folder(args.out)
        if not args.overwrite:
            refuse_existing([out / "scores.json", out / "per_class_iou.png"])
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

    _say(args, f"fitting {args.estimator} (K = {args.n_clusters}) on {n_fit} image(s)")
    segmenter.fit([fit_image(i) for i in range(n_fit)])
    scores = evaluate(segmenter, eval_data, matching=args.matching, protocol=protocol,
                      crop_size=args.crop_size, max_images=args.max_images)
    print(f"{args.dataset} ({scores['n_images']} images, {args.matching} matching, protocol "
          f"{scores['protocol']}): mIoU {100 * scores['mean_iou']:.1f}, pixel accuracy "
          f"{100 * scores['pixel_accuracy']:.1f}")
    for name, iou in zip(scores["class_names"], scores["per_class_iou"], strict=True):
        print(f"  {name:<20s} {100 * iou:5.1f}")
    if out is not None:
        _write_scores(out, scores, args.dataset)
    return 0


def _cmd_extract(args) -> int:
    from ._cli_checks import check_output_folder, checked_image_files
    from .data import extract_to_shards

    # Every file checked before any shard is written (or deleted).
    files = checked_image_files(args.images, recursive=args.recursive)
    check_output_folder(args.out)
    try:
        manifest = extract_to_shards(_make_extractor(args), files, args.out,
                                     shard_size=args.shard_size, resume=not args.no_resume,
                                     overwrite=args.overwrite, dtype=args.dtype, verbose=True)
    except ValueError as err:  # the library's advice, in this command's options
        message = (str(err).replace("overwrite=True", "--overwrite")
                   .replace("pass resume=True to continue it", "drop --no-resume to continue it"))
        raise ValueError(message) from err
    print(f"extracted {manifest.n_rows} tokens of {manifest.n_images} images "
          f"({manifest.n_features} features) into {manifest.n_shards} shards in {args.out}")
    return 0


_COMMANDS = {"demo": _cmd_demo, "segment": _cmd_segment, "evaluate": _cmd_evaluate,
             "extract": _cmd_extract}


def _one_line(err: BaseException) -> str:
    """The error as one line; the type is named unless it is a plain usage error."""
    message = " ".join(str(err).split())
    plain = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, ImportError)
    if not message:
        return type(err).__name__
    return message if isinstance(err, plain) else f"{type(err).__name__}: {message}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spectralnet-seg``; returns the exit status.

    Every error — bad arguments, missing or unreadable files, an existing file as
    ``--out``, an unavailable device, a backbone that cannot load its weights, and any
    failure during the work — is printed as one line on stderr with exit status 2
    (``--debug`` shows the traceback instead).

    Parameters
    ----------
    argv : list of str, optional
        Arguments (``sys.argv[1:]`` when None).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():  # commands may silence expected warnings
            return _COMMANDS[args.command](args)
    except Exception as err:  # one line for the user, whatever failed
        if args.debug:
            raise
        print(f"spectralnet-seg {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
