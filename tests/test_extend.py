"""Plug-ins through the public registries: the worked example of ``docs/how-to/extend.md``.

The page defines a toy kernel (``"radius"``), extractor (``"cell_color"``), estimator
(``"farthest_point"``) and dataset (``"two_colors"``), each as one class plus one
registration line, and uses them together. The fixture runs the page's code blocks (which
assert their own results) and removes the registrations afterwards; the tests then check
that the package's callers accept the new names like built-in ones.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from spectralnet_seg.cluster import EigshSpectralClustering, make_estimator
from spectralnet_seg.cluster import list_estimators as estimator_names
from spectralnet_seg.cluster._registry import ESTIMATORS
from spectralnet_seg.datasets import list_datasets, make_dataset
from spectralnet_seg.datasets._base import DATASETS
from spectralnet_seg.features import list_extractors, make_extractor
from spectralnet_seg.features._registry import EXTRACTORS
from spectralnet_seg.kernels import KernelTags, kernel_tags, list_kernels, make_kernel
from spectralnet_seg.kernels._registry import KERNELS
from spectralnet_seg.segmentation import Segmenter

PAGE = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "extend.md"
REGISTERED = [(KERNELS, "radius"), (EXTRACTORS, "cell_color"),
              (ESTIMATORS, "farthest_point"), (DATASETS, "two_colors")]


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    """The namespace of the docs page's usage blocks, run in order after its plug-in blocks
    (``# my_plugins/NAME.py``) were saved as the files of a package, as a user would."""
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) >= 5
    root = tmp_path_factory.mktemp("plugins")
    (root / "my_plugins").mkdir()
    (root / "my_plugins" / "__init__.py").write_text("")
    for block in blocks:
        header = re.match(r"# (my_plugins/\w+\.py)\n", block)
        if header:
            (root / header.group(1)).write_text(block)
    sys.path.insert(0, str(root))
    namespace: dict = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the two-colour graphs are disconnected
            for block in blocks:
                if not block.startswith("# my_plugins/"):
                    exec(compile(block, str(PAGE), "exec"), namespace)
        yield namespace
    finally:
        sys.path.remove(str(root))
        for module in [m for m in sys.modules if m.split(".")[0] == "my_plugins"]:
            del sys.modules[module]
        for registry, name in REGISTERED:
            if name in registry:
                registry.unregister(name)


def test_each_plugin_is_listed_and_built_by_name_with_its_parameters(plugins):
    assert "radius" in list_kernels() and "cell_color" in list_extractors()
    assert "farthest_point" in estimator_names() and "two_colors" in list_datasets()
    assert make_kernel("radius", radius=0.5).radius == 0.5
    assert make_extractor("cell_color", stride=4).stride == 4
    assert make_estimator("farthest_point", 3).n_clusters == 3
    assert len(make_dataset("two_colors", n_images=5)) == 5
    assert kernel_tags("radius") == KernelTags()  # declares nothing: a plain feature kernel


def test_a_plugin_name_cannot_be_registered_twice(plugins):
    from spectralnet_seg.kernels import register_kernel

    with pytest.raises(ValueError, match="a kernel named 'radius' is already registered"):
        register_kernel("radius")(sys.modules["my_plugins.radius_kernel"].RadiusKernel)


def test_eigsh_takes_the_plugin_kernel_by_name_and_predicts_through_its_cross(plugins):
    rng = np.random.default_rng(1)
    centers = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    y = np.repeat([0, 1, 2], 30)
    X = centers[y] + rng.normal(scale=0.3, size=(90, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # three blobs, three components
        est = EigshSpectralClustering(3, kernel="radius", random_state=0).fit(X)
    assert type(est.kernel_).__name__ == "RadiusKernel" and est.kernel_.radius == 1.0
    assert adjusted_rand_score(y, est.labels_) == 1.0
    y_new = np.array([0, 1, 2, 1])
    X_new = centers[y_new] + rng.normal(scale=0.3, size=(4, 2))
    assert adjusted_rand_score(y_new, est.predict(X_new)) == 1.0


def test_segmenter_splits_the_two_colours_with_every_plugin(plugins):
    data = make_dataset("two_colors", n_images=2, image_size=16)
    masks = np.stack(data.masks())
    segmenter = Segmenter("cell_color", make_estimator("farthest_point", 2)).fit(data.images())
    assert segmenter.grid_shape_ == (2, 2)  # 16 px / stride 8
    labels = np.stack(segmenter.predict(data.images()))
    assert labels.shape == masks.shape
    assert adjusted_rand_score(masks.ravel(), labels.ravel()) == 1.0
