"""The documentation site builds without warnings and shows what it promises."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution of the docs toolchain (the ``docs`` and ``dev`` extras)
TOOLCHAIN = {"mkdocs": "mkdocs", "material": "mkdocs-material", "mkdocstrings": "mkdocstrings",
             "mkdocstrings_handlers": "mkdocstrings[python]"}
MISSING = [dist for module, dist in TOOLCHAIN.items() if importlib.util.find_spec(module) is None]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """``mkdocs build --strict`` into a temporary folder (once for the module)."""
    if MISSING:
        pytest.skip(f"the docs toolchain is not installed ({', '.join(MISSING)}); "
                    "pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # silence mkdocs-material's banner
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert not re.search(r"^WARNING\b", log, flags=re.MULTILINE), log[-5000:]
    return out


def test_build_is_strict_and_complete(site):
    for page in ("index.html", "quickstart/index.html", "concepts/index.html",
                 "how-to/backbones/index.html", "how-to/evaluate-datasets/index.html",
                 "how-to/sklearn-pipeline/index.html", "how-to/gpu/index.html",
                 "how-to/extend/index.html",
                 "scale-out/index.html", "reliability/index.html", "benchmarks/index.html",
                 "gallery/index.html"):
        assert (site / page).is_file(), page


def test_api_reference_is_generated_from_docstrings(site):
    cluster = (site / "api" / "cluster" / "index.html").read_text()
    for name in ("EigshSpectralClustering", "NeuralEigenClustering",
                 "DiscreteNeuralEigenClustering"):
        assert name in cluster
    # a parameter description taken from the docstring, not written in the page
    assert "Nyström" in cluster
    kernels = (site / "api" / "kernels" / "index.html").read_text()
    assert "KNNKernel" in kernels and "make_kernel" in kernels


SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|func|mod|meth|attr|data|obj|exc|ref):`")


def test_api_pages_show_links_not_raw_sphinx_roles(site):
    pages = sorted((site / "api").rglob("*.html"))
    assert len(pages) >= 10
    for page in pages:
        text = re.sub(r"<[^>]+>", "", page.read_text())  # the text a reader sees
        assert not SPHINX_ROLE.search(text), (page, SPHINX_ROLE.search(text))
    cluster = (site / "api" / "cluster" / "index.html").read_text()
    # written [`Kernel`][spectralnet_seg.kernels.Kernel] in a docstring: a link to its page
    assert re.search(r'<a class="autorefs[^>]*href="\.\./kernels/#spectralnet_seg\.kernels\.'
                     r'Kernel"', cluster)


def test_docstrings_use_markdown_cross_references():
    """The API reference is rendered by mkdocstrings: Sphinx roles would show as raw text."""
    offenders = [f"{path.relative_to(ROOT)}:{n}"
                 for path in sorted((ROOT / "spectralnet_seg").rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if SPHINX_ROLE.search(line)]
    assert offenders == []


def test_benchmark_pages_show_tables_plots_and_machine(site):
    for name in ("bench_scaling", "bench_quality", "bench_eigenfunctions", "bench_knn",
                 "bench_coins"):
        html = (site / "benchmarks" / name / name / "index.html").read_text()
        assert "<table>" in html, name
        assert f'src="../{name}.png"' in html or f'src="{name}.png"' in html, name
        assert (site / "benchmarks" / name / f"{name}.png").is_file(), name
        assert "Machine:" in html and "Versions:" in html, name
        assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", html), name


def test_gallery_page_shows_every_picture_with_its_numbers(site):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gallery
        import publish
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    page = ROOT / "docs" / "gallery.md"
    assert not publish.render_page(page, check=True), "run python benchmarks/publish.py"
    html = (site / "gallery" / "index.html").read_text()
    for name in gallery.IMAGES:
        assert f'src="{name}.png"' in html or f'src="../gallery/{name}.png"' in html, name
        assert (site / "gallery" / f"{name}.png").is_file(), name
    assert html.count("<table>") == len(gallery.IMAGES) and "Machine:" in html


def test_quickstart_has_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    quickstart = (ROOT / "docs" / "quickstart.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    assert len(commands) >= 2
    for command in commands[:2]:
        assert command in quickstart


def test_readme_and_docs_home_credit_neuralef_to_the_same_authors():
    for page in (ROOT / "README.md", ROOT / "docs" / "index.md"):
        text = " ".join(page.read_text().split())  # line breaks inside the credit
        credits = set(re.findall(r"\*\*NeuralEF\*\* \(([^)]*?ICML 2022)\)", text))
        assert credits and all(c.startswith("Deng, Shi & Zhu") for c in credits), page


def _modules_with_examples():
    import importlib
    import pkgutil

    import spectralnet_seg

    return [m.name for m in pkgutil.walk_packages(spectralnet_seg.__path__, "spectralnet_seg.")
            if ">>>" in (importlib.util.find_spec(m.name).loader.get_source(m.name) or "")]


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples_run(name):
    import doctest
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the short example fits warn that they stop early
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _publish():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import publish
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return publish


def test_published_numbers_match_the_committed_results():
    """Every generated block in README/docs is current, and none is empty."""
    publish = _publish()
    assert publish.main(["--check"]) == 0, "stale block: run python benchmarks/publish.py"
    for page in publish.PAGES:
        for match in publish._BLOCK.finditer(page.read_text()):
            assert match.group("body").strip(), f"{page.name}: empty block {match['name']}"


def test_readme_quotes_the_demo_and_defaults_csv():
    """Independent of the renderer: the README's figures are the CSV values, rounded."""
    import csv

    readme = (ROOT / "README.md").read_text()
    results = ROOT / "benchmarks" / "results"
    with open(results / "demo" / "results.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            assert f"{100 * float(row['mean_iou']):.1f}" in readme, row["method"]
    with open(results / "bench_defaults" / "bench_defaults.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["data"] == "digits" and r["nmi"]]
    line = next(ln for ln in readme.splitlines() if ln.startswith("| digits |"))
    for row in rows:
        assert f"{float(row['nmi']):.3f}" in line, row["method"]
