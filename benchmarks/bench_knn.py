"""Exact kNN throughput vs the machine's matrix-multiply peak, and approximate recall vs speed.

Exact search (faiss ``IndexFlat``, the kernel of :func:`spectralnet_seg.neighbors.knn_search`)
is a matrix multiply in disguise: ``2 · n_queries · n_database · d`` flops. Its GFLOP/s is shown
next to the measured single-precision GEMM rate of numpy and torch on the same threads, so the
table says how close the kNN graph construction runs to the hardware's limit.

The approximate indexes (HNSW, IVF; the index types and defaults of ``knn_search``) are swept
over their search-breadth knob (``efSearch`` / ``nprobe``): queries per second vs recall@k
against the exact neighbours, with the index build time.

Usage::

    python benchmarks/bench_knn.py --quick
    python benchmarks/bench_knn.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from bench_scaling import manifold_clusters  # noqa: E402

NAME = "bench_knn"
THROUGHPUT_COLUMNS = ["operation", "shape", "threads", "seconds", "gflops", "pct_of_gemm_peak"]
RECALL_COLUMNS = ["index", "param", "value", "build_s", "search_s", "queries_per_s",
                  "recall_at_k"]
HNSW_EF = (16, 32, 64, 128, 256)
IVF_PROBES = (1, 4, 16, 64)


def gemm_rates(size: int, threads: int, repeats: int) -> list[dict]:
    """float32 GEMM GFLOP/s of numpy (BLAS) and torch on ``size × size`` matrices."""
    import torch
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    A = rng.standard_normal((size, size), dtype=np.float32)
    B = rng.standard_normal((size, size), dtype=np.float32)
    flops = 2.0 * size**3
    rows = []
    with threadpool_limits(limits=threads, user_api="blas"):
        A @ B  # warm-up: thread pool start, page faults
        seconds, _, _ = common.median_time(lambda: A @ B, repeats)
    rows.append({"operation": "numpy sgemm (A @ B)", "shape": f"{size}x{size}x{size}",
                 "threads": threads, "seconds": seconds, "gflops": flops / seconds / 1e9})
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tA, tB = torch.from_numpy(A), torch.from_numpy(B)
        torch.mm(tA, tB)
        seconds, _, _ = common.median_time(lambda: torch.mm(tA, tB), repeats)
    finally:
        torch.set_num_threads(previous)
    rows.append({"operation": "torch.mm float32", "shape": f"{size}x{size}x{size}",
                 "threads": threads, "seconds": seconds, "gflops": flops / seconds / 1e9})
    return rows


def exact_rates(X: np.ndarray, Q: np.ndarray, k: int, threads: int, repeats: int
                ) -> tuple[list[dict], np.ndarray]:
    """Exact kNN GFLOP/s: raw faiss ``IndexFlatL2`` and ``knn_search(index="flat")``."""
    import faiss

    from spectralnet_seg.neighbors import _faiss_threads, knn_search

    n, d = X.shape
    flops = 2.0 * Q.shape[0] * n * d
    shape = f"{Q.shape[0]} queries x {n} points x {d} dims, k={k}"
    with _faiss_threads(faiss, threads, work=0):  # exactly `threads`, restored after
        index = faiss.IndexFlatL2(d)
        index.add(X)
        index.search(Q[:64], k)  # warm-up
        seconds, _, (_, truth) = common.median_time(lambda: index.search(Q, k), repeats)
    rows = [{"operation": "faiss IndexFlatL2.search", "shape": shape, "threads": threads,
             "seconds": seconds, "gflops": flops / seconds / 1e9}]
    seconds, _, _ = common.median_time(
        lambda: knn_search(X, Q, n_neighbors=k, index="flat", device="cpu", n_threads=threads),
        repeats)
    rows.append({"operation": "spectralnet_seg knn_search(flat)", "shape": shape,
                 "threads": threads, "seconds": seconds, "gflops": flops / seconds / 1e9})
    return rows, truth


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true k neighbours found."""
    k = truth.shape[1]
    hits = sum(len(np.intersect1d(f, t, assume_unique=True)) for f, t in zip(found, truth,
                                                                               strict=True))
    return hits / (k * truth.shape[0])


def approximate_sweep(X: np.ndarray, Q: np.ndarray, truth: np.ndarray, k: int, threads: int,
                      repeats: int, seed: int) -> list[dict]:
    """Recall@k and queries/s of HNSW (``efSearch``) and IVF (``nprobe``) indexes."""
    import faiss

    from spectralnet_seg.neighbors import _default_n_lists, _faiss_threads

    n, d = X.shape
    rows = []
    with _faiss_threads(faiss, threads, work=0):  # exactly `threads`, restored after
        tic = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(d, 32)  # M = 32, as knn_search's default hnsw_m
        hnsw.add(X)
        build = time.perf_counter() - tic
        for ef in HNSW_EF:
            hnsw.hnsw.efSearch = max(ef, k)
            seconds, _, (_, found) = common.median_time(lambda: hnsw.search(Q, k), repeats)
            rows.append({"index": "HNSW32", "param": "efSearch", "value": ef, "build_s": build,
                         "search_s": seconds, "queries_per_s": Q.shape[0] / seconds,
                         "recall_at_k": recall(found, truth)})
        n_lists = _default_n_lists(n)
        tic = time.perf_counter()
        quantizer = faiss.IndexFlatL2(d)
        ivf = faiss.IndexIVFFlat(quantizer, d, n_lists)
        train = X[np.random.default_rng(seed).choice(n, min(n, 256 * n_lists), replace=False)]
        ivf.train(train)
        ivf.add(X)
        build = time.perf_counter() - tic
        for probes in IVF_PROBES:
            if probes > n_lists:
                continue
            ivf.nprobe = probes
            seconds, _, (_, found) = common.median_time(lambda: ivf.search(Q, k), repeats)
            rows.append({"index": f"IVF{n_lists},Flat", "param": "nprobe", "value": probes,
                         "build_s": build, "search_s": seconds,
                         "queries_per_s": Q.shape[0] / seconds,
                         "recall_at_k": recall(found, truth)})
    return rows


def plot(recall_rows: list[dict], exact_qps: float, gflops: dict[str, float]):
    """Queries/s vs recall@k for each approximate index, exact search as a reference."""
    plt = common.plt()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for index in dict.fromkeys(r["index"] for r in recall_rows):
        pts = [r for r in recall_rows if r["index"] == index]
        ax.semilogy([r["recall_at_k"] for r in pts], [r["queries_per_s"] for r in pts], "o-",
                    label=index)
    ax.semilogy([1.0], [exact_qps], "k*", markersize=12, label="exact (IndexFlatL2)")
    ax.set_xlabel("recall@k")
    ax.set_ylabel("queries / s")
    ax.set_title("Approximate kNN: speed vs recall\n"
                 + ", ".join(f"{name} {value:.0f} GFLOP/s" for name, value in gflops.items()),
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None,
                        help="database points (default 200000; 20000 with --quick)")
    parser.add_argument("--n-queries", type=int, default=None,
                        help="queries (default 10000; 1000 with --quick)")
    parser.add_argument("--dim", type=int, default=384, help="feature dimension")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--gemm-size", type=int, default=None,
                        help="side of the GEMM of the peak measurement (default 4096; 1024 "
                             "with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of every operation (default: OMP_NUM_THREADS, else the "
                             "cores available)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the benchmark; return ``{"throughput", "recall", "files"}``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    quick = args.quick
    reps = common.repeats(args, quick_default=3, full_default=5)
    threads = common.default_threads(args.threads)
    n = args.n or (20_000 if quick else 200_000)
    n_queries = args.n_queries or (1_000 if quick else 10_000)
    info = common.machine_info()
    data, _ = manifold_clusters(n + n_queries, n_features=args.dim, seed=args.seed)
    X, Q = np.ascontiguousarray(data[:n]), np.ascontiguousarray(data[n:])

    throughput = gemm_rates(args.gemm_size or (1024 if quick else 4096), threads, reps)
    exact, truth = exact_rates(X, Q, args.k, threads, reps)
    throughput += exact
    peak = max(r["gflops"] for r in throughput[:2])
    for row in throughput:
        row["pct_of_gemm_peak"] = 100.0 * row["gflops"] / peak
    for row in throughput:
        print(common.text_table([row], THROUGHPUT_COLUMNS).splitlines()[-1], flush=True)
    recall_rows = approximate_sweep(X, Q, truth, args.k, threads, reps, args.seed)
    print()
    print(common.text_table(throughput, THROUGHPUT_COLUMNS))
    print()
    print(common.text_table(recall_rows, RECALL_COLUMNS))

    exact_qps = n_queries / exact[0]["seconds"]
    notes = [f"Data: {n:,} database and {n_queries:,} query points of the synthetic manifold "
             f"clusters of `bench_scaling` (d = {args.dim}), k = {args.k}, {threads} threads "
             f"for every operation. GEMM and search times are medians of {reps} runs (after "
             f"a warm-up call for the GEMMs and IndexFlatL2.search; `knn_search` builds its "
             f"index in every call); `pct_of_gemm_peak` is relative to the faster GEMM. Exact "
             f"search: "
             f"{exact_qps:,.0f} queries/s. Recall@k is measured against IndexFlatL2."]
    out = common.output_dir(args, NAME)
    figure = plot(recall_rows, exact_qps,
                  {r["operation"].split()[0] + (" kNN" if "search" in r["operation"] else ""):
                   r["gflops"] for r in throughput[:3]})
    files = common.write_results(
        out, NAME, info=info, mode="quick" if quick else "full", argv=argv,
        title=__doc__.splitlines()[0],
        tables=[("_throughput", throughput, THROUGHPUT_COLUMNS),
                ("_recall", recall_rows, RECALL_COLUMNS)],
        notes=notes, figures=[(f"{NAME}.png", figure)])
    common.publish(files, args.docs_dir, NAME, quick=args.quick)
    print(f"\nwrote {', '.join(str(p) for p in files)}")
    return {"throughput": throughput, "recall": recall_rows, "files": files}


if __name__ == "__main__":
    main()
