"""The checks of ``gpu_check.py``: each runs one CUDA path and compares it with the CPU.

Every check function returns the measured values of its row, raises [`Skipped`][Skipped] when
it cannot run here, or [`CheckFailed`][CheckFailed] (with the values) when they fall outside
the acceptance bounds below; [`run_check`][run_check] turns any of these, or any other
exception, into a table row.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import _common as common
import numpy as np

# Acceptance bounds of a check that ran (stated in the report's notes).
MIN_EXACT_RECALL = 0.99
MAX_RELATIVE_DIST_DIFF = 1e-3
IVF_RECALL_SLACK = 0.05
FIT_NMI_SLACK = 0.1
MIN_DISTRIBUTED_NMI = 0.9
MAX_FEATURE_RELATIVE_DIFF = 1e-2
MIN_RELOAD_AGREEMENT = 0.99

BOUNDS_NOTE = (
    f"Bounds for `ok`: exact kNN recall@k >= {MIN_EXACT_RECALL} and distances within "
    f"{MAX_RELATIVE_DIST_DIFF:g} of the largest CPU distance; IVF recall at most "
    f"{IVF_RECALL_SLACK} below the same index on the CPU; "
    f"on CUDA the search must run on a faiss GPU index. Fits: NMI to the truth at most "
    f"{FIT_NMI_SLACK} below the CPU fit's. Loader: rows identical to the source, batches "
    f"page-locked when pinned. Distributed: the requested backend, an exact all-reduce, "
    f"DDP gradients within 1e-5 of the plain backward, NMI >= {MIN_DISTRIBUTED_NMI} to the "
    f"single-process fit. Features: within {MAX_FEATURE_RELATIVE_DIFF:g} of the CPU's "
    "largest magnitude. Saved models: a neural fit and a timm extractor made on the device, "
    "saved with joblib and loaded in a process without a GPU, give at least "
    f"{MIN_RELOAD_AGREEMENT} of the same labels and features within the same bound. Fit times follow a warm-up fit on each device (CUDA context, "
    "cuBLAS); kNN times are medians of `--repeats` searches, each of which builds its "
    "index (and, on the GPU, its faiss GPU resources).")
"""What a check must show to be ``ok``, in words (the report's notes)."""


class Skipped(Exception):
    """A check that cannot run on this machine (the message says why)."""


class CheckFailed(AssertionError):
    """A check that ran but whose values are outside the acceptance bounds."""


def run_check(check: str, case: str, device: str, fn: Callable[[], dict]) -> dict:
    """Run one check; its row, with status, reason and seconds, whatever happens.

    Parameters
    ----------
    check : str
        Kind of check (``"knn"``, ``"fit"``, ...).
    case : str
        What this row runs (index and metric, estimator and data, ...).
    device : {"cuda", "cpu"}
        Device under test.
    fn : callable
        Returns the measured values; raises :class:`Skipped`, :class:`CheckFailed` (values
        outside the bounds, which are still reported) or any exception.

    Returns
    -------
    dict
        ``check``, ``case``, ``device``, ``status`` (``ok`` / ``failed`` / ``skipped``),
        ``reason``, ``seconds`` and the measured values.
    """
    row = {"check": check, "case": case, "device": device, "status": "ok", "reason": ""}
    tic = time.perf_counter()
    try:
        row.update(fn())
    except Skipped as why:
        row.update(status="skipped", reason=str(why))
    except CheckFailed as err:
        values, reason = err.args
        row.update(values, status="failed", reason=reason)
    except Exception as err:  # a broken check must not stop the others
        traceback.print_exc()
        row.update(status="failed", reason=f"{type(err).__name__}: {err}"[:500])
    row["seconds"] = time.perf_counter() - tic
    print(f"[{row['status']:>7}] {check} {case} ({device}, {row['seconds']:.1f} s)"
          + (f": {row['reason']}" if row["reason"] else ""), flush=True)
    return row


def _require(values: dict, failures: list[str]) -> dict:
    """``values``, or :class:`CheckFailed` with them when any bound was violated."""
    if failures:
        raise CheckFailed(values, "; ".join(failures))
    return values


def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- device
def device_check(*, device: str, warm_up: Callable[[str], None]) -> dict:
    """The device answers: its name, a float32 matmul against float64 on the CPU, warm-up.

    ``warm_up(where)`` runs once on the CPU and once on ``device`` (a tiny fit), so that
    the first-call costs (CUDA context, cuBLAS handles, lazy imports) stay out of the
    timings of the later checks.
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    A, B = (torch.randn(512, 512, generator=generator) for _ in range(2))
    reference = A.double() @ B.double()
    product = (A.to(device) @ B.to(device)).cpu().double()
    relative = float((product - reference).abs().max() / reference.abs().max())
    cuda = device == "cuda"
    tic = time.perf_counter()
    for where in dict.fromkeys(("cpu", device)):
        warm_up(where)
    values = {"name": torch.cuda.get_device_name() if cuda else common.cpu_model(),
              "capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda
              else "", "memory_gib": (torch.cuda.get_device_properties(0).total_memory / 2**30
                                      if cuda else None),
              "cuda": f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if cuda
              else "", "matmul_relative_diff": relative,
              "warm_up_s": time.perf_counter() - tic}
    failures = [] if relative <= 1e-3 else [f"float32 matmul off by {relative:.3g}"]
    return _require(values, failures)


# ----------------------------------------------------------------------------- kNN
@contextlib.contextmanager
def _recorded_index(record: list[str]):
    """Record the class of every faiss index ``knn_search`` builds (GPU or CPU)."""
    from spectralnet_seg.neighbors import _search  # the module knn_search looks it up in

    original = _search._build_index

    def spy(*args, **kwargs):
        built = original(*args, **kwargs)
        record.append(type(built).__name__)
        return built

    _search._build_index = spy
    try:
        yield
    finally:
        _search._build_index = original


def _timed_search(X, Q, device: str, reps: int, **params):
    from spectralnet_seg.neighbors import knn_search

    def search():
        out = knn_search(X, Q, device=device, random_state=0, **params)
        _synchronize(device)
        return out

    seconds, _, (dist, ind) = common.median_time(search, reps)
    return seconds, dist, ind


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def knn_check(X, Q, *, index: str, metric: str, k: int, device: str, reps: int) -> dict:
    """``knn_search`` on ``device`` vs the exact CPU search of the same queries."""
    from spectralnet_seg.neighbors import faiss_gpu_count

    if device == "cuda" and faiss_gpu_count() == 0:
        raise Skipped("faiss has no GPU support here (faiss_gpu_count() = 0; install the "
                      "`gpu` extra, faiss-gpu-cu12): knn_search would search on the CPU")
    params = dict(n_neighbors=k, metric=metric)
    cpu_exact_s, true_dist, truth = _timed_search(X, Q, "cpu", reps, index="flat", **params)
    cpu_s, _, cpu_ind = (cpu_exact_s, true_dist, truth) if index == "flat" else \
        _timed_search(X, Q, "cpu", reps, index=index, **params)
    built: list[str] = []
    with _recorded_index(built):
        device_s, dist, ind = _timed_search(X, Q, device, reps, index=index, **params)
    diff = float(np.abs(dist.astype(np.float64) - true_dist).max())
    values = {"faiss_index": built[-1], "shape": f"{Q.shape[0]}x{X.shape[0]}x{X.shape[1]}",
              "recall_at_k": _recall(ind, truth), "identical_ids": float(np.mean(ind == truth)),
              "max_dist_diff": diff, "cpu_index_recall": _recall(cpu_ind, truth),
              "device_search_s": device_s, "cpu_search_s": cpu_s}
    failures = []
    if device == "cuda" and not built[-1].startswith(("Gpu", "IndexShards", "IndexReplicas")):
        failures.append(f"searched with {built[-1]}, not a faiss GPU index")
    if index == "flat":
        if values["recall_at_k"] < MIN_EXACT_RECALL:
            failures.append(f"recall {values['recall_at_k']:.4f} < {MIN_EXACT_RECALL}")
        if diff > MAX_RELATIVE_DIST_DIFF * float(true_dist.max()):
            failures.append(f"distances differ by {diff:.3g}")
    elif values["recall_at_k"] < values["cpu_index_recall"] - IVF_RECALL_SLACK:
        failures.append(f"recall {values['recall_at_k']:.3f} below the CPU index's "
                        f"{values['cpu_index_recall']:.3f} - {IVF_RECALL_SLACK}")
    return _require(values, failures)


# ----------------------------------------------------------------------------- fits
def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits scaled to [0, 1] (1797 x 64, 10 classes)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def build_estimator(method: str, device: str, cfg: dict):
    """A neural estimator whose training and kNN graph both run on ``device``.

    ``method`` is ``"neural"``, ``"neural-minibatch"`` (kernel graph built inside each
    minibatch, on the device) or ``"discrete"``.
    """
    from spectralnet_seg.kernels import KNNKernel

    kernel = KNNKernel(n_neighbors=10, metric="cosine", weighting="cosine", device=device)
    params = dict(kernel=kernel, hidden_layer_sizes=tuple(cfg["hidden"]),
                  batch_size=cfg["batch_size"], max_iter=cfg["max_iter"],
                  n_iter_no_change=cfg["max_iter"], device=device, random_state=cfg["seed"])
    if method == "discrete":
        return common.build_estimator("discrete", 10, fine_tune_iter=cfg["fine_tune_iter"],
                                      **params)
    sampler = "minibatch" if method == "neural-minibatch" else "graph"
    return common.build_estimator("neural", 10, sampler=sampler, n_init=cfg["n_init"],
                                  **params)


def fit_labels(method: str, X, device: str, cfg: dict) -> tuple[np.ndarray, float]:
    """Labels and fit seconds of ``method`` on ``X`` with everything on ``device``."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    estimator = build_estimator(method, device, cfg)
    tic = time.perf_counter()
    with warnings.catch_warnings():  # a fixed number of steps, by design
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X)
    _synchronize(device)
    return estimator.labels_, time.perf_counter() - tic


def fit_check(method: str, X, y, *, device: str, cfg: dict) -> dict:
    """The same fit on ``device`` and on the CPU: agreement, quality, time."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    cpu_labels, cpu_s = fit_labels(method, X, "cpu", cfg)
    labels, device_s = fit_labels(method, X, device, cfg)
    values = {"n": X.shape[0], "nmi_device_vs_cpu": nmi(cpu_labels, labels),
              "nmi_truth_cpu": nmi(y, cpu_labels), "nmi_truth_device": nmi(y, labels),
              "fit_cpu_s": cpu_s, "fit_device_s": device_s}
    failures = []
    if values["nmi_truth_device"] < values["nmi_truth_cpu"] - FIT_NMI_SLACK:
        failures.append(f"NMI to the truth {values['nmi_truth_device']:.3f} on {device} vs "
                        f"{values['nmi_truth_cpu']:.3f} on the CPU")
    return _require(values, failures)


# ----------------------------------------------------------------------------- loader
def loader_check(X, *, source: str, device: str, batch_size: int, n_batches: int,
                 num_workers: int, workdir: Path) -> dict:
    """Batches of ``make_loader`` copied to ``device`` and back equal the source rows."""
    from spectralnet_seg.data import make_loader

    if source == "memmap":
        path = workdir / "loader_source.npy"
        np.save(path, X)
        X = np.load(path, mmap_mode="r")
    pin = device == "cuda"
    loader = make_loader(X, batch_size, pin_memory=pin, num_workers=num_workers,
                         random_state=0, return_indices=True)
    pinned, worst, rows_checked, batches = True, 0.0, 0, 0
    for indices, rows in loader:
        pinned &= bool(rows.is_pinned()) if pin else False
        on_device = rows.to(device, non_blocking=True)
        _synchronize(device)
        back = on_device.cpu().numpy()
        expected = np.asarray(X[indices.numpy()])
        worst = max(worst, float(np.abs(back - expected).max()))
        rows_checked += len(back)
        batches += 1
        if batches == n_batches:
            break
    values = {"pin_memory": pin, "pinned": pinned if pin else False,
              "num_workers": num_workers, "batches": batches, "rows_checked": rows_checked,
              "identical": worst == 0.0, "max_abs_diff": worst}
    failures = [] if worst == 0.0 else [f"rows differ from the source by up to {worst:.3g}"]
    if pin and not pinned:
        failures.append("pin_memory=True gave batches that are not page-locked")
    return _require(values, failures)


# ----------------------------------------------------------------------------- distributed
def distributed_rank(device: str, cfg: dict) -> dict:
    """Runs on each rank of the group: a fit, an all-reduce and a DDP backward on ``device``."""
    import torch
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel

    from spectralnet_seg import distributed as dist_utils

    with common.cpu_threads(cfg["threads"]):  # a fresh process: torch's default threads again
        X, _ = digits_data()
        labels, _ = fit_labels("neural", X, device, cfg)
    local = dist_utils.local_device() if device == "cuda" else torch.device("cpu")
    total = torch.arange(8, dtype=torch.float32, device=local)
    tdist.all_reduce(total)  # the package's helpers skip the collective for one rank
    expected = torch.arange(8, dtype=torch.float32) * tdist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 4).to(local)
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(1)).to(local)
    model(x).pow(2).mean().backward()
    plain = model.weight.grad.detach().clone()
    model.zero_grad()
    ddp = DistributedDataParallel(model, device_ids=[local.index] if device == "cuda" else None)
    ddp(x).pow(2).mean().backward()
    return {"labels": labels, "backend": str(tdist.get_backend()),
            "world_size": tdist.get_world_size(),
            "all_reduce_ok": bool(torch.equal(total.cpu(), expected)),
            "ddp_grad_max_diff": float((model.weight.grad - plain).abs().max())}


def distributed_check(*, device: str, world_size: int, cfg: dict) -> dict:
    """A one-rank (NCCL on CUDA, gloo on CPU) group vs the single-process fit."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from spectralnet_seg.distributed import run_local

    X, _ = digits_data()
    single, _ = fit_labels("neural", X, device, cfg)
    backend = "nccl" if device == "cuda" else "gloo"
    reports = run_local(distributed_rank, world_size, args=(device, cfg), backend=backend)
    first = reports[0]
    values = {"backend": first["backend"], "world_size": first["world_size"],
              "nmi_vs_single": nmi(single, first["labels"]),
              "identical_labels": bool(np.array_equal(single, first["labels"])),
              "all_reduce_ok": all(r["all_reduce_ok"] for r in reports),
              "ddp_grad_max_diff": max(r["ddp_grad_max_diff"] for r in reports)}
    failures = []
    if values["backend"] != backend:
        failures.append(f"the group runs {values['backend']}, not {backend}")
    if not values["all_reduce_ok"]:
        failures.append("all_reduce gave a wrong sum")
    if values["ddp_grad_max_diff"] > 1e-5:
        failures.append(f"DDP gradients differ by {values['ddp_grad_max_diff']:.3g}")
    if values["nmi_vs_single"] < MIN_DISTRIBUTED_NMI:
        failures.append(f"NMI to the single-process fit {values['nmi_vs_single']:.3f}")
    return _require(values, failures)


# ----------------------------------------------------------------------------- features
def features_check(*, device: str, n_images: int, size: int, model_kwargs: dict) -> dict:
    """``TimmExtractor`` with the same random weights on ``device`` and on the CPU."""
    import torch

    from spectralnet_seg.features import TimmExtractor

    images = np.random.default_rng(0).integers(0, 256, (n_images, size, size, 3), np.uint8)
    outputs = []
    for where in ("cpu", device):
        torch.manual_seed(0)  # timm initialises the random weights from torch's generator
        extractor = TimmExtractor("vit_tiny_patch16_224", pretrained=False, layers="paper",
                                  model_kwargs=model_kwargs, device=where, batch_size=2)
        outputs.append(np.asarray(extractor.extract(images).features, dtype=np.float64))
    diff = float(np.abs(outputs[0] - outputs[1]).max())
    relative = diff / max(float(np.abs(outputs[0]).max()), 1e-12)
    values = {"shape": "x".join(map(str, outputs[1].shape)), "max_abs_diff": diff,
              "relative_diff": relative}
    failures = [] if relative <= MAX_FEATURE_RELATIVE_DIFF else [
        f"features differ by {relative:.3g} of their largest magnitude"]
    return _require(values, failures)


_LOAD_WITHOUT_GPU = """
import sys, warnings
import joblib, numpy as np, torch
assert not torch.cuda.is_available()
estimator, extractor, X, images = joblib.load(sys.argv[1])
estimator.set_params(device="cpu")  # it was asked for the GPU, which this process lacks
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    features = extractor.extract(images).features
np.savez(sys.argv[2], labels=estimator.predict(X), features=features,
         warned=any("runs on the CPU" in str(w.message) for w in caught))
"""


def persistence_check(X, *, device: str, cfg: dict, model_kwargs: dict,
                      workdir: Path) -> dict:
    """A neural fit and a timm extractor made on ``device``, saved with joblib and loaded in
    a process that sees no GPU (``CUDA_VISIBLE_DEVICES=""``): the same labels and features."""
    import os
    import subprocess
    import sys
    import warnings

    import joblib
    import torch
    from sklearn.exceptions import ConvergenceWarning

    from spectralnet_seg.features import TimmExtractor

    estimator = build_estimator("neural", device, cfg)
    with warnings.catch_warnings():  # a fixed number of steps, by design
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X)
    torch.manual_seed(0)
    extractor = TimmExtractor("vit_tiny_patch16_224", pretrained=False,
                              model_kwargs=model_kwargs, device=device)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), np.uint8)
    features = np.asarray(extractor.extract(images).features, dtype=np.float64)
    saved, loaded = workdir / "saved.joblib", workdir / "loaded.npz"
    joblib.dump((estimator, extractor, X, images), saved)
    done = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_GPU, str(saved), str(loaded)],
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise CheckFailed({}, "loading without a GPU failed: "
                          + done.stderr.strip().splitlines()[-1][:300])
    result = np.load(loaded)
    agreement = float(np.mean(result["labels"] == estimator.predict(X)))
    relative = float(np.abs(result["features"] - features).max()
                     / max(float(np.abs(features).max()), 1e-12))
    values = {"labels_agree": agreement, "relative_diff": relative,
              "cpu_fallback_warned": bool(result["warned"])}
    failures = []
    if agreement < MIN_RELOAD_AGREEMENT:
        failures.append(f"{agreement:.3f} of the labels agree after reloading")
    if relative > MAX_FEATURE_RELATIVE_DIFF:
        failures.append(f"reloaded features differ by {relative:.3g} of their largest "
                        "magnitude")
    if device == "cuda" and not result["warned"]:
        failures.append("the extractor saved with device='cuda' did not say it runs on the CPU")
    return _require(values, failures)
