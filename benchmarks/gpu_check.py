"""GPU check: every CUDA path of the package, run on the device and compared with the CPU.

One script, a few minutes on one GPU, that says whether the package's GPU code works on a
machine before anything long is run there. Each check is one row (check, case, device,
status ``ok`` / ``failed`` / ``skipped`` with the reason, measured values, seconds); the
checks themselves live in ``_gpu_checks.py``, with the bounds a row must meet to be ``ok``:

* ``device`` — the device's name, a float32 matmul against float64 on the CPU, and a tiny
  warm-up fit on each device (so that later timings exclude the CUDA start-up).
* ``knn`` — :func:`spectralnet_seg.neighbors.knn_search` with a faiss GPU index (exact
  ``flat`` with the L2 and cosine metrics, ``ivf``) against the exact CPU search: recall@k,
  fraction of identical neighbour ids (position by position), largest distance difference;
  the faiss index class that actually searched is recorded.
* ``fit`` — ``NeuralEigenClustering`` (graph and minibatch samplers) and
  ``DiscreteNeuralEigenClustering`` fitted with ``device=DEVICE`` (kNN graph included) and
  with ``device="cpu"``: NMI between the two labelings, NMI of each to the ground truth,
  both fit times; on scikit-learn's digits and the synthetic manifold clusters of
  ``bench_scaling``.
* ``loader`` — :func:`spectralnet_seg.data.make_loader` with ``pin_memory=True`` (from an
  array and from a memory map): a few batches copied to the device and back must equal the
  source rows exactly, and the batches must be page-locked.
* ``distributed`` — a fit inside a one-rank NCCL process group
  (:func:`spectralnet_seg.distributed.run_local`), an all-reduce and a
  ``DistributedDataParallel`` backward on the device, against the single-process fit.
* ``features`` — ``TimmExtractor`` (random weights, no download) on the device vs the CPU.
* ``persistence`` — a neural fit and a ``TimmExtractor`` made on the device, saved with
  joblib and loaded in a process that sees no GPU (``CUDA_VISIBLE_DEVICES=""``): the same
  labels and features (a model saved from a GPU run must load on a CPU-only machine).

With ``--device cpu`` every check runs on the CPU instead (faiss CPU indexes, gloo instead of
NCCL, ``pin_memory=False``), so the script is known to run before a GPU is lent. A failing
check records its exception and the script goes on; it exits with status 1 when any check
that was not skipped failed.

Usage::

    python benchmarks/gpu_check.py --quick --device cpu
    python benchmarks/gpu_check.py                # on a GPU machine (not yet timed on one)
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
import _gpu_checks as checks  # noqa: E402
from bench_scaling import manifold_clusters  # noqa: E402

NAME = "gpu_check"
SUMMARY_COLUMNS = ["check", "case", "device", "status", "reason", "seconds"]
DEVICE_COLUMNS = ["case", "device", "status", "name", "capability", "memory_gib", "cuda",
                  "matmul_relative_diff", "warm_up_s"]
KNN_COLUMNS = ["case", "device", "status", "faiss_index", "shape", "recall_at_k",
               "identical_ids", "max_dist_diff", "cpu_index_recall", "device_search_s",
               "cpu_search_s"]
FIT_COLUMNS = ["case", "device", "status", "n", "nmi_device_vs_cpu", "nmi_truth_cpu",
               "nmi_truth_device", "fit_cpu_s", "fit_device_s"]
LOADER_COLUMNS = ["case", "device", "status", "pin_memory", "pinned", "num_workers",
                  "batches", "rows_checked", "identical", "max_abs_diff"]
DISTRIBUTED_COLUMNS = ["case", "device", "status", "backend", "world_size", "nmi_vs_single",
                       "identical_labels", "all_reduce_ok", "ddp_grad_max_diff"]
FEATURE_COLUMNS = ["case", "device", "status", "shape", "max_abs_diff", "relative_diff"]
PERSISTENCE_COLUMNS = ["case", "device", "status", "labels_agree", "relative_diff",
                       "cpu_fallback_warned"]
# ----------------------------------------------------------------------------- report
def plot(fit_rows: list[dict], knn_rows: list[dict], device: str):
    """Seconds on the CPU and on ``device``: fits and kNN searches side by side."""
    plt = common.plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = [(axes[0], fit_rows, "fit_cpu_s", "fit_device_s", "fit (s)"),
              (axes[1], knn_rows, "cpu_search_s", "device_search_s", "kNN search (s)")]
    for ax, rows, cpu_key, device_key, label in panels:
        rows = [r for r in rows if r.get(cpu_key) is not None and r.get(device_key) is not None]
        pos = np.arange(len(rows))
        ax.bar(pos - 0.2, [r[cpu_key] for r in rows], 0.4, label="cpu")
        ax.bar(pos + 0.2, [r[device_key] for r in rows], 0.4,
               label=f"{device} (device under test)")
        ax.set_xticks(pos, [r["case"] for r in rows], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"GPU check: CPU vs {device}", fontsize=10)
    return fig


def parse_args(argv):
    import torch

    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"),
                        default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device under test (default: cuda when available); cpu runs every "
                             "check on the CPU (faiss CPU, gloo, no pinned memory)")
    parser.add_argument("--knn-n", type=int, default=None,
                        help="kNN database points (default 100000; 2000 with --quick)")
    parser.add_argument("--fit-n", type=int, default=None,
                        help="manifold-cluster points of the fits (default 20000; 1000 quick)")
    parser.add_argument("--max-iter", type=int, default=None,
                        help="training steps of the fits (default 300; 30 with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and faiss CPU threads (default: 1 with --quick, where more "
                             "threads only slow the tiny fits down; else torch's default)")
    parser.add_argument("--world-size", type=int, default=1,
                        help="ranks of the distributed check (NCCL needs one GPU per rank)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here; use --device cpu")
    if args.threads is None and args.quick:
        args.threads = 1
    return args


def run_checks(args, workdir: Path) -> dict[str, list[dict]]:
    """Every check of the run, by kind."""
    quick, device, seed = args.quick, args.device, args.seed
    reps = common.repeats(args, quick_default=1, full_default=2)
    n_db, n_q = args.knn_n or (2_000 if quick else 100_000), 200 if quick else 10_000
    dim = 32 if quick else 384
    data, _ = manifold_clusters(n_db + n_q, n_features=dim, seed=seed)
    X_db, Q = np.ascontiguousarray(data[:n_db]), np.ascontiguousarray(data[n_db:])
    cfg = {"max_iter": args.max_iter or (30 if quick else 300), "seed": seed,
           "hidden": [32] if quick else [256, 256], "batch_size": 256 if quick else 1024,
           "n_init": 2 if quick else 3, "fine_tune_iter": 10 if quick else 100,
           "threads": args.threads}
    digits = checks.digits_data()
    manifold = manifold_clusters(args.fit_n or (1_000 if quick else 20_000), seed=seed)
    tables: dict[str, list[dict]] = {k: [] for k in
                                     ("device", "knn", "fit", "loader", "distributed",
                                      "features", "persistence")}

    def add(kind: str, case: str, fn: Callable[[], dict]) -> None:
        tables[kind].append(checks.run_check(kind, case, device, fn))

    def warm_up(where: str) -> None:
        checks.fit_labels("neural", digits[0][:300], where, dict(cfg, max_iter=2))

    add("device", "matmul, warm-up fit",
        lambda: checks.device_check(device=device, warm_up=warm_up))
    for index, metric in (("flat", "l2"), ("flat", "cosine"), ("ivf", "l2")):
        add("knn", f"{index} {metric} k=10",
            lambda index=index, metric=metric: checks.knn_check(
                X_db, Q, index=index, metric=metric, k=10, device=device, reps=reps))
    for data_name, (X, y) in (("digits", digits), ("manifold", manifold)):
        for method in ("neural", "neural-minibatch", "discrete"):
            if data_name == "manifold" and method == "neural-minibatch":
                continue  # one minibatch-graph fit covers that path
            add("fit", f"{method} {data_name}", lambda m=method, X=X, y=y: checks.fit_check(
                m, X, y, device=device, cfg=cfg))
    for source in ("array", "memmap"):
        for workers in (0,) if quick else (0, 2):
            add("loader", f"{source}, {workers} workers",
                lambda s=source, w=workers: checks.loader_check(
                    manifold[0], source=s, device=device, batch_size=64 if quick else 1024,
                    n_batches=4 if quick else 16, num_workers=w, workdir=workdir))
    backend = "nccl" if device == "cuda" else "gloo"
    add("distributed", f"{backend}, {args.world_size} rank(s), neural digits",
        lambda: checks.distributed_check(device=device, world_size=args.world_size, cfg=cfg))
    vit = dict(depth=2, embed_dim=32, num_heads=2) if quick else {}
    add("features", "timm vit_tiny (random weights)", lambda: checks.features_check(
        device=device, n_images=2 if quick else 8, size=64 if quick else 224,
        model_kwargs=vit))
    add("persistence", "joblib: saved on the device, loaded without a GPU",
        lambda: checks.persistence_check(digits[0][:500], device=device, cfg=cfg,
                                         model_kwargs=dict(depth=2, embed_dim=32, num_heads=2),
                                         workdir=workdir))
    return tables


def main(argv=None) -> dict:
    """Run every check; return ``{"rows", "tables", "failed", "files"}``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    with common.cpu_threads(args.threads):
        info = common.machine_info()
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as workdir:
            tables = run_checks(args, Path(workdir))
    rows = [row for kind in tables.values() for row in kind]
    failed = [r for r in rows if r["status"] == "failed"]
    skipped = [r for r in rows if r["status"] == "skipped"]
    print()
    print(common.text_table(rows, SUMMARY_COLUMNS))

    device = args.device
    verdict = (f"**{len(rows) - len(failed) - len(skipped)} of {len(rows)} checks ok**, "
               f"{len(failed)} failed, {len(skipped)} skipped (device under test: "
               f"`{device}`).")
    if device == "cpu":
        verdict += (" This is the CPU run: every 'device' result is the CPU's (faiss CPU "
                    "indexes, gloo, `pin_memory=False`), so it shows that the script and the "
                    "code paths it drives work, not that the CUDA paths do.")
    notes = [verdict, checks.BOUNDS_NOTE]
    out = common.output_dir(args, NAME)
    figure = plot(tables["fit"], tables["knn"], device)
    files = common.write_results(
        out, NAME, info=info, mode="quick" if args.quick else "full", argv=argv,
        title=__doc__.splitlines()[0],
        tables=[("", rows, SUMMARY_COLUMNS, "All checks"),
                ("_device", tables["device"], DEVICE_COLUMNS, "The device"),
                ("_knn", tables["knn"], KNN_COLUMNS, "kNN search vs the exact CPU search"),
                ("_fit", tables["fit"], FIT_COLUMNS, f"Fits on {device} vs the CPU"),
                ("_loader", tables["loader"], LOADER_COLUMNS, "Loading batches to the device"),
                ("_distributed", tables["distributed"], DISTRIBUTED_COLUMNS,
                 "One-rank process group vs one process"),
                ("_features", tables["features"], FEATURE_COLUMNS, "timm features"),
                ("_persistence", tables["persistence"], PERSISTENCE_COLUMNS,
                 "Saved models loaded without a GPU")],
        notes=notes, figures=[(f"{NAME}.png", figure)])
    common.publish(files, args.docs_dir, NAME, quick=args.quick)
    print(f"\n{verdict}\nwrote {', '.join(str(p) for p in files)}")
    return {"rows": rows, "tables": tables, "failed": failed, "files": files}


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
