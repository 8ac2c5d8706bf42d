"""Shared plumbing of the benchmark scripts: machine description, timing, memory, output.

Every benchmark writes one table per run (CSV + Markdown + PNG) under its output folder;
the Markdown table starts with a header naming the date, the machine (CPU model, threads,
GPU or none) and the library versions, so that every figure in it is traceable to one run on
one machine. Timings are medians over repeats (:func:`median_time`) unless a table says
otherwise (one fit per seed, averaged over the seeds). Peak memory is measured
per fit, either in-process (the kernel's resettable high-water mark, :class:`PeakRSS`) or in
a fresh subprocess per measurement (:func:`run_isolated`), which also enforces a time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import multiprocessing as mp
import os
import platform
import resource
import shlex
import shutil
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_ROOT = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- estimators
SKLEARN_SPECTRAL = ("sklearn", "sklearn-spectral")
"""Benchmark names of scikit-learn's ``SpectralClustering``, the outside reference."""


def build_estimator(method: str, n_clusters: int, **params):
    """An estimator by name: the package's registry, or scikit-learn's ``SpectralClustering``.

    Parameters
    ----------
    method : str
        A name of :func:`spectralnet_seg.cluster.list_estimators` (``"eigsh"``, ``"neural"``,
        ``"discrete"``, ``"kmeans"``, ...) or one of :data:`SKLEARN_SPECTRAL`.
    n_clusters : int
        Number of clusters.
    **params
        Constructor parameters; the rest keep the estimator's defaults.
    """
    if method in SKLEARN_SPECTRAL:  # the reference implementation, not a registered method
        from sklearn.cluster import SpectralClustering

        return SpectralClustering(n_clusters, **params)
    from spectralnet_seg.cluster import make_estimator

    return make_estimator(method, n_clusters, **params)


# ----------------------------------------------------------------------------- machine
def token_classes(masks: Sequence[np.ndarray], grid_shape: tuple[int, int]) -> np.ndarray:
    """The class under the centre of each token's cell, tokens in ``flatten()`` order.

    Parameters
    ----------
    masks : sequence of ndarray of shape (H, W)
        One class mask per image, all of one size.
    grid_shape : (int, int)
        Token grid of the extraction (``ExtractedFeatures.grid_shape``).

    Returns
    -------
    ndarray of shape (n_images * grid_shape[0] * grid_shape[1],)
    """
    stride = np.asarray(masks[0]).shape[0] // grid_shape[0]
    return np.concatenate([np.asarray(mask)[stride // 2::stride, stride // 2::stride].ravel()
                           for mask in masks])


def cpu_model() -> str:
    """CPU model name (``/proc/cpuinfo`` on Linux, :mod:`platform` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict[str, str]:
    """Date, host description, threads, GPU and library versions of this run."""
    import faiss
    import scipy
    import sklearn
    import torch

    import spectralnet_seg
    from spectralnet_seg._utils import available_cores

    gpu = "none"
    if torch.cuda.is_available():
        gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu_model()} ({available_cores()} cores available)",
        "threads": (f"torch {torch.get_num_threads()}, faiss {faiss.omp_get_max_threads()}, "
                    f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"),
        "gpu": gpu,
        "memory": f"{_total_memory_gib():.0f} GiB RAM",
        "python": platform.python_version(),
        "versions": (f"spectralnet_seg {spectralnet_seg.__version__}, numpy {np.__version__}, "
                     f"scipy {scipy.__version__}, scikit-learn {sklearn.__version__}, "
                     f"torch {torch.__version__}, faiss {faiss.__version__}"),
    }


def _total_memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return float("nan")


def available_memory_bytes() -> int:
    """Memory the benchmark may use (``MemAvailable``; total RAM when unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(_total_memory_gib() * 2**30)


# ----------------------------------------------------------------------------- timing
def default_threads(requested: int | None) -> int:
    """Threads a benchmark gives each operation: ``requested``, else ``OMP_NUM_THREADS``,
    else every core this process may run on (a container's CPU quota counted)."""
    from spectralnet_seg._utils import available_cores

    return requested or int(os.environ.get("OMP_NUM_THREADS", 0) or 0) or available_cores()


@contextlib.contextmanager
def cpu_threads(threads: int | None):
    """torch's and faiss's CPU threads inside the block (``None``: leave them as they are);
    the caller's counts are restored afterwards (measurements run in a test's process)."""
    import faiss
    import torch

    previous = torch.get_num_threads(), faiss.omp_get_max_threads()
    if threads:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        faiss.omp_set_num_threads(previous[1])


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Run ``fn`` ``repeats`` times; return the median seconds, all times, the last result."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        tic = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times), times, result


class CheckpointRecorder:
    """A neural estimator's ``callback`` that scores its snapshots during one timed fit.

    Call :meth:`start` just before ``fit``. At every ``every``-th call the snapshot is
    finished and scored, and a point is recorded with

    * ``train_s`` — seconds since :meth:`start` minus the time spent in earlier calls: the
      setup (graph, settings) and the training up to ``n_iter``;
    * ``finish_s`` — the seconds ``snapshot()`` took: what ``fit`` would have spent after
      training had it stopped at ``n_iter`` (embedding, Rayleigh–Ritz, k-means; the discrete
      fine-tuning);
    * ``time_s = train_s + finish_s`` — the fit time of a run stopped there;
    * ``quality`` — ``score(fitted_snapshot)``, whose time is excluded.

    Parameters
    ----------
    score : callable
        Fitted estimator -> float (higher is better).
    every : int, default=1
        Score one call in ``every`` (the others cost nothing: the snapshot is not finished).
    """

    def __init__(self, score: Callable[[Any], float], *, every: int = 1):
        self.score = score
        self.every = max(1, int(every))
        self.start()

    def start(self) -> None:
        """Reset the clock and the points."""
        self.points: list[dict] = []
        self.calls = 0
        self._excluded = 0.0
        self._tic = time.perf_counter()

    def __call__(self, snapshot, n_iter: int) -> None:
        enter = time.perf_counter()
        try:
            self.calls += 1
            if (self.calls - 1) % self.every:
                return
            estimator = snapshot()
            finish_s = time.perf_counter() - enter
            train_s = enter - self._tic - self._excluded
            self.points.append({"call": self.calls, "n_iter": int(n_iter), "train_s": train_s,
                                "finish_s": finish_s, "time_s": train_s + finish_s,
                                "quality": float(self.score(estimator))})
        finally:
            self._excluded += time.perf_counter() - enter

    @property
    def last_call_scored(self) -> bool:
        """Whether the latest call (the end of training, after ``fit``) was scored."""
        return bool(self.points) and self.points[-1]["call"] == self.calls


def first_reaching(points: Sequence[dict], target: float, key: str = "quality"
                   ) -> dict | None:
    """The first point (in order) whose ``key`` is at least ``target``, or None."""
    return next((p for p in points if p[key] >= target), None)


# ----------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakRSS:
    """Peak resident memory of this process while the ``with`` block runs.

    On Linux the kernel's high-water mark (``VmHWM``) is reset on entry by writing ``5`` to
    ``/proc/self/clear_refs``, so ``peak_mb`` is the true peak of the block and ``delta_mb``
    the peak above the memory resident on entry (the data and imported libraries). Where the
    reset is unavailable, ``ru_maxrss`` (peak of the whole process so far) is used instead
    and ``exact`` is False.
    """

    def __enter__(self) -> PeakRSS:
        self.exact = False
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.exact = _status_kib("VmHWM") is not None
        except OSError:
            pass
        self._start_kib = _status_kib("VmRSS") or _ru_maxrss_kib()
        return self

    def __exit__(self, *exc) -> None:
        peak = _status_kib("VmHWM") if self.exact else None
        peak = peak if peak is not None else _ru_maxrss_kib()
        self.peak_mb = peak / 1024
        self.delta_mb = max(peak - self._start_kib, 0) / 1024


def _ru_maxrss_kib() -> int:
    scale = 1 / 1024 if sys.platform == "darwin" else 1  # bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


# ----------------------------------------------------------------------------- isolation
def _child(conn, fn, kwargs) -> None:
    try:
        conn.send(("ok", fn(**kwargs)))
    except BaseException as err:  # report any failure to the parent, then exit
        conn.send(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"))
    finally:
        conn.close()


def run_isolated(fn: Callable[..., dict], kwargs: dict, *, timeout: float | None,
                 isolate: bool = True) -> tuple[str, Any]:
    """Call ``fn(**kwargs)`` in a fresh ``spawn`` subprocess (or in-process).

    A fresh interpreter per measurement gives each method its own peak memory and no warm
    caches left by another method, and lets a run that exceeds ``timeout`` be stopped.

    Parameters
    ----------
    fn : callable
        A module-level function (it is pickled by reference).
    kwargs : dict
        Its keyword arguments (picklable).
    timeout : float or None
        Seconds before the child is terminated (ignored in-process).
    isolate : bool, default=True
        Run in a subprocess; False calls ``fn`` directly (faster start, shared memory peak).

    Returns
    -------
    status : {"ok", "error", "timeout"}
    value : dict or str
        ``fn``'s result, or a message.
    """
    if not isolate:
        # Measurements set their thread counts; the caller's (a test worker's) come back.
        with cpu_threads(None):
            try:
                return "ok", fn(**kwargs)
            except Exception as err:  # a failing method must not stop the other measurements
                return "error", f"{type(err).__name__}: {err}"
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, kwargs), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            return "timeout", f"stopped after {timeout:.0f} s"
        status, value = parent.recv()
    except EOFError:  # the child died without reporting (killed for memory, crashed)
        proc.join(5)
        code = proc.exitcode
        cause = (f"killed by signal {-code}" + (" (out of memory?)" if code == -9 else "")
                 if code is not None and code < 0 else f"exit code {code}")
        return "error", f"worker died without a result: {cause}"
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join(5)
        parent.close()
    return status, value


# ----------------------------------------------------------------------------- output
def format_value(value, digits: int = 3) -> str:
    """Compact text for a table cell (floats to ``digits`` significant digits)."""
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            return ""
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:.3g}"
    return str(value)


def text_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Aligned plain-text table of ``rows`` (dicts) over ``columns``."""
    cells = [list(columns)] + [[format_value(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     for row in cells)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """GitHub-flavoured Markdown table of ``rows`` over ``columns``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(r.get(c)).replace("|", "/") for c in columns)
              + " |" for r in rows]
    return "\n".join(lines)


def machine_header(info: dict[str, str], *, title: str, mode: str, command: str) -> str:
    """Markdown lines naming the run: title, date, machine, versions and the command."""
    return "\n".join([
        f"# {title}",
        "",
        f"- **Run:** {info['date']}, {mode} mode: `{command}`",
        f"- **Machine:** {info['cpu']}; {info['memory']}; GPU: {info['gpu']}",
        f"- **Threads:** {info['threads']}",
        f"- **Versions:** Python {info['python']}, {info['versions']}",
        "",
    ])


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Rows as CSV (raw values, full precision) over ``columns``."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})


def write_results(out: Path, name: str, *, info: dict[str, str], mode: str, argv: Sequence[str],
                  tables: Sequence[tuple[str, Sequence[dict], Sequence[str]]],
                  notes: Sequence[str] = (), figures: Sequence[tuple[str, Any]] = (),
                  title: str | None = None) -> list[Path]:
    """Write ``<name>.csv`` (one per table), ``<name>.md`` and the figures under ``out``.

    Parameters
    ----------
    out : Path
        Output folder (created).
    name : str
        Benchmark name, the stem of the files.
    info : dict
        :func:`machine_info`.
    mode : {"quick", "full"}
        Mode of the run, recorded in the header.
    argv : sequence of str
        Command-line arguments of the run, recorded in the header.
    tables : sequence of (suffix, rows, columns) or (suffix, rows, columns, heading)
        Each table goes to ``<name><suffix>.csv`` and into the Markdown file, under
        ``## heading`` when one is given.
    notes : sequence of str
        Markdown paragraphs after the tables (findings, skipped runs).
    figures : sequence of (file name, matplotlib Figure)
        Saved as PNG and embedded in the Markdown file.
    title : str, optional
        Heading of the Markdown file; ``name`` by default.

    Returns
    -------
    list of Path
        Files written.
    """
    out.mkdir(parents=True, exist_ok=True)
    # shlex.join quotes arguments with spaces (bench_peers' "sklearn amg"): pasteable as is.
    command = shlex.join(["python", f"benchmarks/{name}.py", *argv])
    parts = [machine_header(info, title=title or name, mode=mode, command=command)]
    written = []
    for suffix, rows, columns, *heading in tables:
        path = out / f"{name}{suffix}.csv"
        write_csv(path, rows, columns)
        written.append(path)
        parts += [f"## {heading[0]}\n" for _ in heading[:1]]
        parts += [markdown_table(rows, columns), ""]
    parts += [f"{note}\n" for note in notes]
    for file_name, figure in figures:
        path = out / file_name
        figure.savefig(path, dpi=110, bbox_inches="tight")
        written.append(path)
        parts.append(f"![{name}]({file_name})\n")
    md = out / f"{name}.md"
    md.write_text("\n".join(parts))
    written.append(md)
    return written


def publish(files: Sequence[Path], docs_dir: str | os.PathLike | None, name: str, *,
            quick: bool = False) -> None:
    """Copy the Markdown and PNG outputs to ``<docs_dir>/<name>/`` for the docs site
    (``<name>_quick/`` for a quick run, which must not replace the full run's page)."""
    if docs_dir is None:
        return
    target = Path(docs_dir) / (f"{name}_quick" if quick else name)
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        if path.suffix in (".md", ".png", ".csv"):
            shutil.copy2(path, target / path.name)


# ----------------------------------------------------------------------------- CLI
def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    """Parser with the options every benchmark shares."""
    parser = argparse.ArgumentParser(prog=f"{name}.py", description=description)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (about two minutes on 2 CPU cores)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: benchmarks/results/{name}/, "
                             f"or benchmarks/results/{name}_quick/ with --quick)")
    parser.add_argument("--docs-dir", default=None,
                        help="also copy the table and plot to DOCS_DIR/<name>/ "
                             "(DOCS_DIR/<name>_quick/ with --quick; e.g. docs/benchmarks)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timing repeats (median reported); default 3 (fewer with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def output_dir(args: argparse.Namespace, name: str) -> Path:
    """``--out``, or the default results folder of the mode."""
    if args.out is not None:
        return Path(args.out)
    return RESULTS_ROOT / (f"{name}_quick" if args.quick else name)


def repeats(args: argparse.Namespace, *, quick_default: int = 2, full_default: int = 3) -> int:
    """Timing repeats of the run: ``--repeats``, else the default of the mode."""
    if args.repeats is not None:
        if args.repeats < 1:
            raise SystemExit("--repeats must be at least 1")
        return args.repeats
    return quick_default if args.quick else full_default


def plt():
    """matplotlib.pyplot with a non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot
