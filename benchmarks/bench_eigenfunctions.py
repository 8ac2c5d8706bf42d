"""How well the learned eigenfunctions match eigsh, vs training steps and batch size.

On scikit-learn's digits with a dense Gaussian kernel of fixed bandwidth,
:class:`NeuralEigenClustering` is trained with its defaults (pairs drawn from the global graph
eigsh decomposes) over a grid of step caps (``max_iter``; a run stops earlier once its
eigenvalue estimates reach a plateau, ``n_iter`` records where) and batch sizes (pairs per
step). Each run is compared with
the top-K eigenvectors of ``D^{-1/2} W D^{-1/2}`` from
:class:`EigshSpectralClustering` on the same kernel by
:func:`spectralnet_seg.eigenfunctions.eigenfunction_alignment`: the mean cosine of the principal
angles between the two K-dimensional subspaces (1 = same subspace) and the relative errors of
the eigenvalue estimates.

Usage::

    python benchmarks/bench_eigenfunctions.py --quick
    python benchmarks/bench_eigenfunctions.py
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

NAME = "bench_eigenfunctions"
COLUMNS = ["batch_size", "steps", "n_iter", "status", "mean_cosine", "min_cosine",
           "eig_rel_err_mean", "eig_rel_err_max", "fit_s", "repeats"]
FULL_STEPS = (100, 300, 1000, 3000)
FULL_BATCHES = (64, 256, 1024)
QUICK_STEPS = (30, 100)
QUICK_BATCHES = (128, 512)


def load(gamma: float):
    """Digits and the dense RBF kernel of the benchmark."""
    from sklearn.datasets import load_digits

    from spectralnet_seg.kernels import RBFKernel

    X, _ = load_digits(return_X_y=True)
    # Pixels scaled to [0, 1]: exp(-||x - y||^2) then has a clear gap after the 10th eigenvalue.
    return (X / 16.0).astype(np.float32), RBFKernel(gamma=gamma, device="cpu")


def reference(X, kernel, n_components: int, seed: int):
    """eigsh's top eigenpairs on the same kernel (fitted estimator)."""
    from spectralnet_seg.cluster import EigshSpectralClustering

    return EigshSpectralClustering(n_components, kernel=kernel,
                                   random_state=seed).fit(X)


def measure(X, kernel, ref, *, steps: int, batch_size: int, cfg: dict) -> dict:
    """Train with one (steps, batch size); alignment with ``ref``."""
    from spectralnet_seg.eigenfunctions import eigenfunction_alignment

    row = {"batch_size": batch_size, "steps": steps}
    estimator = None

    def fit():
        nonlocal estimator
        estimator = common.build_estimator(
            "neural", cfg["n_components"], kernel=kernel, max_iter=steps,
            batch_size=batch_size, device=cfg["device"], random_state=cfg["seed"],
            **cfg["network"]).fit(X)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_s, times, _ = common.median_time(fit, cfg["repeats"])
    except Exception as err:  # record and go on with the rest of the grid
        first_line = (str(err).strip().splitlines() or [""])[0]
        return {**row, "status": f"error: {type(err).__name__}: {first_line}"[:160]}
    report = eigenfunction_alignment(estimator, X, ref)
    errors = report.eigenvalue_relative_errors
    return {**row, "n_iter": estimator.n_iter_, "status": "ok",
            "mean_cosine": report.mean_cosine,
            "min_cosine": float(report.cosines.min()),
            "eig_rel_err_mean": None if errors is None else float(errors.mean()),
            "eig_rel_err_max": None if errors is None else float(errors.max()),
            "fit_s": fit_s, "repeats": len(times)}


def plot(rows: list[dict], batches):
    """Alignment and eigenvalue error vs steps, one line per batch size."""
    plt = common.plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for b in batches:
        done = [r for r in rows if r["batch_size"] == b and r["status"] == "ok"]
        if not done:
            continue
        steps = [r["steps"] for r in done]
        ax1.semilogx(steps, [r["mean_cosine"] for r in done], "o-", label=f"batch {b}")
        ax2.loglog(steps, [r["eig_rel_err_mean"] for r in done], "o-", label=f"batch {b}")
    ax1.set_xlabel("training steps")
    ax1.set_ylabel("mean cosine of principal angles")
    ax1.set_ylim(0, 1.02)
    ax1.axhline(0.95, color="grey", lw=0.8, ls="--")
    ax2.set_xlabel("training steps")
    ax2.set_ylabel("mean relative eigenvalue error")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("NeuralEF eigenfunctions vs eigsh (digits, RBF kernel)")
    fig.tight_layout()
    return fig


def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=None,
                        help=f"step budgets (default {FULL_STEPS}; {QUICK_STEPS} with --quick)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help=f"batch sizes (default {FULL_BATCHES}; {QUICK_BATCHES} quick)")
    parser.add_argument("--n-components", type=int, default=10, help="K eigenfunctions")
    parser.add_argument("--gamma", type=float, default=1.0,
                        help="RBF bandwidth on the digits scaled to [0, 1]")
    parser.add_argument("--hidden", type=int, nargs="+", default=None,
                        help="hidden widths of the MLP (default: the estimator's)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="learning rate (default: the estimator's)")
    parser.add_argument("--device", default="auto", help="device of the neural estimator")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the benchmark; return ``{"rows", "reference_eigenvalues", "files"}``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    quick = args.quick
    steps_grid = sorted(args.steps or (QUICK_STEPS if quick else FULL_STEPS))
    batches = sorted(args.batch_sizes or (QUICK_BATCHES if quick else FULL_BATCHES))
    # Only the step budget and the batch size are swept; the rest is the estimator's default
    # unless given.
    network = {}
    if args.hidden is not None:
        network["hidden_layer_sizes"] = tuple(args.hidden)
    if args.learning_rate is not None:
        network["learning_rate"] = args.learning_rate
    cfg = {"seed": args.seed, "repeats": common.repeats(args, quick_default=1),
           "n_components": args.n_components, "network": network, "device": args.device}
    info = common.machine_info()
    X, kernel = load(args.gamma)
    tic = time.perf_counter()
    ref = reference(X, kernel, args.n_components, args.seed)
    print(f"eigsh reference: {time.perf_counter() - tic:.2f}s, eigenvalues "
          f"{np.round(ref.eigenvalues_, 4).tolist()}")
    rows = []
    for batch_size in batches:
        for steps in steps_grid:
            row = measure(X, kernel, ref, steps=steps, batch_size=batch_size, cfg=cfg)
            rows.append(row)
            print(common.text_table([row], COLUMNS).splitlines()[-1], flush=True)
    print()
    print(common.text_table(rows, COLUMNS))
    ref_values = ", ".join(f"{v:.4f}" for v in ref.eigenvalues_)
    notes = [f"Digits (1797 × 64, scaled to [0, 1]), RBF kernel gamma = {args.gamma} (dense, fixed bandwidth), "
             f"K = {args.n_components}; eigsh eigenvalues of the normalised affinity: "
             f"{ref_values}. NeuralEigenClustering with its defaults except `max_iter` = steps and "
             f"`batch_size`{''.join(f', `{k}` = {v}' for k, v in network.items())} "
             f"(its own learning-rate schedule: constant until the eigenvalue estimates "
             f"reach a plateau, then annealed; `n_iter`: the steps it trained, which stay "
             f"below `steps` once a plateau came first), seed {args.seed}. "
             f"`mean_cosine` / `min_cosine`: cosines of the principal angles between the "
             f"learned and the eigsh subspaces; `eig_rel_err_*`: |λ̂ − λ| / λ over the K "
             f"eigenvalues. `fit_s` is the median of `repeats` fits."]
    out = common.output_dir(args, NAME)
    files = common.write_results(
        out, NAME, info=info, mode="quick" if quick else "full", argv=argv,
        title=__doc__.splitlines()[0],
        tables=[("", rows, COLUMNS)], notes=notes,
        figures=[(f"{NAME}.png", plot(rows, batches))])
    common.publish(files, args.docs_dir, NAME, quick=args.quick)
    print(f"\nwrote {', '.join(str(p) for p in files)}")
    return {"rows": rows, "reference_eigenvalues": ref.eigenvalues_, "files": files}


if __name__ == "__main__":
    main()
