"""Write the numbers quoted in README.md and docs/ from the committed results files.

Every table or figure of results in the README and the docs sits between two markers::

    <!-- generated: NAME -->
    ...
    <!-- /generated -->

and is rendered here from a file under ``benchmarks/results/`` (``NAME`` picks the renderer).
``python benchmarks/publish.py`` rewrites those blocks; ``--check`` only compares and exits
with status 1 when a block is stale, which the test suite runs, so a number typed by hand or
left behind by a new run fails CI.

Usage::

    python benchmarks/publish.py            # rewrite the blocks
    python benchmarks/publish.py --check    # fail on a stale block
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGES = (ROOT / "README.md", ROOT / "docs" / "quickstart.md", ROOT / "docs" / "index.md",
         ROOT / "docs" / "benchmarks" / "index.md", ROOT / "docs" / "gallery.md")
_BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)",
                    re.S)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _percent(value: str) -> str:
    return f"{100 * float(value):.1f}"


def demo_sentence() -> str:
    """The demo's mIoU per method, as the README's sentence."""
    rows = {r["method"]: r for r in _rows(RESULTS / "demo" / "results.csv")}
    names = {"discrete": "the discrete network", "neural": "the neural eigenfunctions",
             "eigsh": "eigsh", "kmeans": "k-means"}
    parts = [f"{names[m]} {_percent(rows[m]['mean_iou'])}" for m in
             ("discrete", "neural", "eigsh", "kmeans") if m in rows]
    return ("With the default seed the demo prints these mIoU (%): " + ", ".join(parts) +
            " (`benchmarks/results/demo/results.csv`, the same at 1 and 2 threads).\n")


def demo_table() -> str:
    """The demo's table (mIoU, pixel accuracy, fit time) in Markdown."""
    rows = _rows(RESULTS / "demo" / "results.csv")
    lines = ["| method | mIoU (%) | pixel acc (%) | fit (s) |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {_percent(r['mean_iou'])} | {_percent(r['pixel_accuracy'])} "
              f"| {float(r['fit_time_s']):.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def defaults_table() -> str:
    """NMI with every estimator's defaults: one row per data set, one column per method."""
    rows = _rows(RESULTS / "bench_defaults" / "bench_defaults.csv")
    methods = list(dict.fromkeys(r["method"] for r in rows if r["nmi"]))
    data = list(dict.fromkeys(r["data"] for r in rows))
    by = {(r["data"], r["method"]): r for r in rows}
    lines = ["| data | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for name in data:
        cells = []
        for method in methods:
            row = by.get((name, method))
            cells.append(f"{float(row['nmi']):.3f}" if row and row["nmi"] else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    wins = []
    for name in data:
        ours = [float(by[(name, m)]["nmi"]) for m in ("neural", "discrete")
                if by.get((name, m)) and by[(name, m)]["nmi"]]
        better = [f"{m} {float(by[(name, m)]['nmi']):.3f}" for m in methods
                  if m not in ("neural", "discrete") and by.get((name, m))
                  and by[(name, m)]["nmi"] and ours and float(by[(name, m)]["nmi"]) > max(ours)]
        if better:
            wins.append(f"{name} ({', '.join(better)})")
    lines += ["", "Where another method beats both neural estimators: "
              + ("; ".join(wins) if wins else "nowhere") + "."]
    seeds = max(int(r["seeds"]) for r in rows if r["seeds"])
    fewer = [f"{r['method']} on {r['data']}: {r['seeds']}" for r in rows
             if r["seeds"] and 0 < int(r["seeds"]) < seeds]
    return "\n".join(lines) + (f"\n\nNMI, mean over {seeds} seeds"
                               + (f" (fewer for {'; '.join(fewer)})" if fewer else "")
                               + " (`benchmarks/results/bench_defaults/bench_defaults.csv`).\n")


def peers_table() -> str:
    """Peers side by side: one row per method, NMI and fit time per data set.

    Reads ``bench_peers/bench_peers.csv`` and, when present, further full runs
    ``bench_peers_*/bench_peers.csv`` (e.g. a separate run at N = 10⁵); quick runs are left out.
    """
    files = [RESULTS / "bench_peers" / "bench_peers.csv"] + sorted(
        p for p in RESULTS.glob("bench_peers_*/bench_peers.csv") if "_quick" not in p.parent.name)
    rows = [r for path in files for r in _rows(path)]
    data = list(dict.fromkeys(r["data"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["data"], r["method"]): r for r in rows}
    sizes = {r["data"]: int(r["n"]) for r in rows}
    lines = ["| method | " + " | ".join(f"{d} (N = {sizes[d]:,})" for d in data) + " |",
             "|---|" + "---|" * len(data)]
    for method in methods:
        cells = []
        for name in data:
            row = by.get((name, method))
            if row is None:
                cells.append("not run")
            elif row["status"] == "ok":
                cells.append(f"{float(row['nmi']):.3f} / {float(row['ncut']):.3f} / "
                             f"{float(row['fit_s']):.3g} s")
            else:  # "timeout after 240 s", "not installed", "no GPU", "skipped", "error"
                cells.append(row["status"].replace("timeout: stopped", "timeout")
                             if row["status"].startswith("timeout")
                             else row["status"].split(":")[0])
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    sources = ", ".join(f"`{p.relative_to(ROOT)}`" for p in files)
    return "\n".join(lines) + ("\n\nNMI / normalised cut on our default graph (lower is "
                               f"better) / fit time; means over the seeds ({sources}).\n")


def gallery_section(results: Path | None = None, image_dir: str = "gallery") -> str:
    """The gallery: per image its PNG, then time, Ncut and regions of every method.

    Parameters
    ----------
    results : Path, optional
        Folder of ``gallery.csv`` and ``gallery.md``; ``benchmarks/results/gallery/``.
    image_dir : str
        Folder of the PNGs, relative to the page.
    """
    results = RESULTS / "gallery" if results is None else results
    rows = _rows(results / "gallery.csv")
    run = [line for line in (results / "gallery.md").read_text().splitlines()
           if line.startswith(("- **Run:**", "- **Machine:**"))]
    parts = [*run, ""]
    for image in dict.fromkeys(r["image"] for r in rows):
        mine = [r for r in rows if r["image"] == image]
        first = mine[0]
        parts += [f"## {image}", "",
                  f"![{image}: the photo and its {len(mine)} partitions]({image_dir}/{image}.png)",
                  "", f"{first['width']} x {first['height']} pixels, K = {first['n_clusters']}.",
                  "", "| method | time (s) | Ncut | regions |", "|---|---|---|---|"]
        parts += [f"| {r['method']} | {float(r['time_s']):.1f} | {float(r['ncut']):.3f} | "
                  f"{r['regions']} |" for r in mine]
        parts.append("")
    return "\n".join(parts)


def _number(value: str, digits: int = 3) -> str:
    return f"{float(value):.{digits}g}" if value not in ("", None) else "–"


def scaling_table() -> str:
    """Time to eigsh's quality per method and N, and the converged fit, from bench_scaling."""
    rows = _rows(RESULTS / "bench_scaling" / "bench_scaling.csv")
    lines = ["| method | N | time to quality (s) | speedup at equal quality | NMI there | "
             "converged fit (s) | NMI converged |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['method']} | {int(r['n']):,} | {r['status']} | | | | |")
            continue
        reached = r["quality"] != "not reached"
        lines.append(
            f"| {r['method']} | {int(r['n']):,} | "
            f"{_number(r['ttq_s']) if reached else 'not reached'} | "
            f"{(_number(r['speedup']) + 'x') if reached and r['speedup'] else '–'} | "
            f"{_number(r['ttq_nmi']) if reached else _number(r['best_nmi']) + ' (best)'} | "
            f"{_number(r['fit_s'])} | {_number(r['nmi'])} |")
    return "\n".join(lines) + (
        "\n\nQuality = NMI within 0.01 of the reference's (eigsh on the HNSW graph, the first "
        "row of each N), on the same graph; eigsh times are medians of `repeats` fits "
        "(`bench_scaling_resources.csv`), neural rows one fit "
        "(`benchmarks/results/bench_scaling/bench_scaling.csv`).\n")


def coins_table() -> str:
    """Normalised cut, regions and fit time on scikit-learn's coins graph, per scale."""
    rows = _rows(RESULTS / "bench_coins" / "bench_coins.csv")
    lines = ["| scale | method | Ncut | regions | fit (s) | time vs scikit-learn |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['scale']} | {r['method']} | {r['status']} | | | |")
            continue
        ratio = f"{float(r['time_vs_sklearn']):.2f}x" if r["time_vs_sklearn"] else "–"
        lines.append(f"| {r['scale']} | {r['method']} | {float(r['ncut']):.4g} | "
                     f"{r['regions']} | {float(r['fit_s']):.3g} | {ratio} |")
    return "\n".join(lines) + ("\n\nNormalised cut of the labels on the coins pixel graph (lower "
                               "is better), 25 regions asked for "
                               "(`benchmarks/results/bench_coins/bench_coins.csv`).\n")


def scaling_headline() -> str:
    """README's headline: the neural fit's speed at equal quality at the largest common N."""
    folder = RESULTS / "bench_scaling"
    rows = _rows(folder / "bench_scaling.csv")
    command = next(line for line in (folder / "bench_scaling.md").read_text().splitlines()
                   if line.startswith("- **Run:**"))
    command = command[command.index("`"):].split(" (")[0]
    ok = [r for r in rows if r["status"] == "ok"]
    reference = next(r["method"] for r in ok if r["quality"] == "reference")
    common = [int(r["n"]) for r in ok if r["method"] == reference]
    lines = []
    for method in ("neural", "discrete"):
        mine = [r for r in ok if r["method"] == method and int(r["n"]) in common]
        if not mine:
            continue
        row = max(mine, key=lambda r: int(r["n"]))
        ref = next(r for r in ok if r["method"] == reference and r["n"] == row["n"])
        if row["quality"] == "not reached":
            lines.append(f"At N = {int(row['n']):,} the {method} estimator did not reach "
                         f"{reference}'s NMI {float(ref['nmi']):.3f} − 0.01 (best "
                         f"{float(row['best_nmi']):.3f}).")
        else:
            lines.append(f"At N = {int(row['n']):,} the {method} estimator reaches "
                         f"{reference}'s quality (NMI {float(row['ttq_nmi']):.3f} against "
                         f"{float(ref['nmi']):.3f}) in {float(row['ttq_s']):.3g} s against "
                         f"{float(ref['fit_s']):.3g} s: **{float(row['speedup']):.2f}x** as "
                         "fast at equal quality, both measured in one run.")
    return " ".join(lines) + f" Reproduce with {command}.\n"


RENDERERS: dict[str, Callable[[], str]] = {
    "demo": demo_sentence,
    "demo-table": demo_table,
    "defaults": defaults_table,
    "peers": peers_table,
    "gallery": gallery_section,
    "scaling": scaling_table,
    "scaling-headline": scaling_headline,
    "coins": coins_table,
}


def render(text: str) -> str:
    """``text`` with every generated block rewritten."""
    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in RENDERERS:
            raise SystemExit(f"unknown generated block {name!r}; known: {sorted(RENDERERS)}")
        return match.group(1) + RENDERERS[name]() + match.group(4)
    return _BLOCK.sub(replace, text)


def render_page(page: Path, *, check: bool = False) -> bool:
    """Rewrite the generated blocks of ``page`` (unless ``check``); whether it was stale."""
    text = page.read_text()
    new = render(text)
    if new != text and not check:
        page.write_text(new)
    return new != text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a block differs from the results files")
    args = parser.parse_args(argv)
    stale = []
    for page in PAGES:
        if not page.exists():
            continue
        if render_page(page, check=args.check):
            stale.append(page)
    for page in stale:
        print(f"{'stale' if args.check else 'updated'}: {page.relative_to(ROOT)}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
