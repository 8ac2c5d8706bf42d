"""Segment the bundled texture mosaics with neural eigenfunctions, offline (minutes on 2 cores).

A ``spectralnet_seg.segmentation.Segmenter`` pairs a feature extractor with a
clustering estimator. It is fitted on a set of training mosaics (one clustering shared by
all images), then segments held-out mosaics out of sample, at full resolution. The kernel
is the paper's feature + pixel graph; the Segmenter hands the tokens' colours and
positions (the context of the pixel graph) to the estimator. The script
scores the result with the many-to-one majority matching and writes three pictures:

* ``mosaic_overlays.png``  -- held-out images, their segmentations and the ground truth;
* ``mosaic_logits.png``    -- the first outputs of the network over one image;
* ``mosaic_iou.png``       -- the IoU of each texture class.

Run it with ``python examples/segment_mosaics.py [output folder]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from spectralnet_seg.cluster import make_estimator
from spectralnet_seg.config import MosaicConfig
from spectralnet_seg.datasets import TextureMosaics
from spectralnet_seg.evaluation import evaluate
from spectralnet_seg.metrics import apply_mapping
from spectralnet_seg.plotting import plot_eigenfunctions, plot_per_class_iou, plot_segmentations
from spectralnet_seg.segmentation import Segmenter


def main(out_dir: str = ".") -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = MosaicConfig()  # the mosaics, features and kernel the demo uses too
    train = TextureMosaics(config.n_train, image_size=config.image_size, seed=0)
    test = TextureMosaics(config.n_test, image_size=config.image_size, seed=1)

    estimator = make_estimator("discrete", config.n_clusters, kernel=config.build_kernel(),
                               **config.neural_params(), random_state=config.random_state)
    segmenter = Segmenter(config.build_extractor(), estimator)
    segmenter.fit(train.images())
    print(f"{segmenter.estimator_.n_active_clusters_} of {config.n_clusters} clusters in use")

    scores = evaluate(segmenter, test, matching="majority", protocol=None,
                      return_predictions=True)
    print(f"held-out mosaics: mIoU {100 * scores['mean_iou']:.1f}, pixel accuracy "
          f"{100 * scores['pixel_accuracy']:.1f}")

    images = test.images()[:4]
    # Clusters mapped to their matched classes, so that one colour means one class in the
    # prediction and the ground-truth columns.
    mapped = [apply_mapping(p, scores["mapping"]) for p in scores["predictions"][:4]]
    plot_segmentations(images, {"discrete": mapped}, ground_truth=test.masks()[:4],
                       ignore_index=255).savefig(out / "mosaic_overlays.png")
    logits = segmenter.transform(images[:1])[0]  # (h, w, n_clusters) network outputs
    plot_eigenfunctions(images[0], logits, n_show=6,
                        titles=[f"logit {j}" for j in range(6)]
                        ).savefig(out / "mosaic_logits.png")
    plot_per_class_iou(scores["per_class_iou"], test.class_names,
                       title="DiscreteNeuralEigenClustering").savefig(out / "mosaic_iou.png")
    return scores


if __name__ == "__main__":
    main(*sys.argv[1:2])
