"""Loaders for the standard unsupervised-segmentation benchmarks in their usual folder layouts.

Nothing is downloaded: point ``root`` at a copy you already have. Masks are mapped to the
class sets used by unsupervised segmentation work, with 255 for pixels that are not scored:

=====================  ===================================================================
dataset                layout under ``root`` and label mapping
=====================  ===================================================================
Pascal Context-59/60   ``VOCdevkit/VOC2010/{JPEGImages, SegmentationClassContext,
                       ImageSets/SegmentationContext/{train,val}.txt}`` (``root`` may also
                       be ``VOCdevkit`` or ``VOC2010``); PNG values 0 = background,
                       1..59 = classes. 59: background ignored, classes shift down by 1.
                       60: kept as stored.
Cityscapes-27          ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` and
                       ``gtFine/{split}/{city}/*_gtFine_labelIds.png``; class = labelId − 7,
                       negative (void) ids ignored.
ADE20K-150             ``ADEChallengeData2016/{images, annotations}/{training, validation}``
                       (``root`` may be ``ADEChallengeData2016``); 0 = "other" ignored,
                       classes shift down by 1.
COCO-Stuff-27          ``images/{split}2017/*.jpg``, ``annotations/{split}2017/*.png``
                       (fine ids 0..181, 255 unlabelled) and the image lists
                       ``curated/{split}2017/Coco164kFull_Stuff_Coarse*.txt``; fine ids map to
                       12 "thing" + 15 "stuff" coarse classes (COCO-Stuff's hierarchy, as in
                       IIC / PiCIE / STEGO).
=====================  ===================================================================

Splits are called ``"train"`` and ``"val"`` everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..images import load_image
from ._base import IGNORE_INDEX, SegmentationDataset, register_dataset, remap_labels

__all__ = ["FolderDataset", "PascalContext", "Cityscapes27", "ADE20K", "CocoStuff27",
           "PASCAL_CONTEXT_59_CLASSES", "CITYSCAPES_27_CLASSES", "ADE20K_150_CLASSES",
           "COCOSTUFF_27_CLASSES", "COCOSTUFF_FINE_TO_COARSE"]

PASCAL_CONTEXT_59_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck",
    "tvmonitor", "wall", "water", "window", "wood")

# Cityscapes labelIds 7..33 in order (ids 0..6 are void).
CITYSCAPES_27_CLASSES = (
    "road", "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail",
    "bridge", "tunnel", "pole", "polegroup", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "caravan", "trailer", "train",
    "motorcycle", "bicycle")

ADE20K_150_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp",
    "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator",
    "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door",
    "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
    "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt",
    "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag")

COCOSTUFF_27_CLASSES = (
    "electronic", "appliance", "food-things", "furniture-things", "indoor", "kitchen",
    "accessory", "animal", "outdoor", "person", "sports", "vehicle",  # 12 things
    "ceiling", "floor", "food-stuff", "furniture-stuff", "rawmaterial", "textile", "wall",
    "window", "building", "ground", "plant", "sky", "solid", "structural", "water")  # 15 stuff

# Fine COCO-Stuff ids (COCO category id - 1) of each coarse class. Things are contiguous
# ranges of COCO's supercategories; stuff follows COCO-Stuff's stuff hierarchy.
_COARSE_MEMBERS: tuple = (
    range(71, 77), range(77, 83), range(51, 61), range(61, 71), range(83, 91),
    range(43, 51), range(25, 33), range(15, 25), range(9, 15), [0], range(33, 43),
    range(1, 9),
    [101, 102],                                                       # ceiling
    [100, 113, 114, 115, 116, 117],                                   # floor
    [120, 121, 152, 169],                                             # food-stuff
    [97, 106, 107, 109, 111, 122, 129, 132, 155, 160, 164],           # furniture-stuff
    [99, 131, 138, 142],                                              # rawmaterial
    [91, 92, 103, 104, 108, 130, 136, 140, 151, 166, 167],            # textile
    range(170, 177),                                                  # wall
    [179, 180],                                                       # window
    [94, 95, 127, 150, 157, 165],                                     # building
    [110, 124, 125, 135, 139, 143, 144, 146, 148, 153, 158],          # ground
    [93, 96, 118, 123, 128, 133, 141, 162, 168],                      # plant
    [105, 156],                                                       # sky
    [126, 134, 149, 159, 161, 181],                                   # solid
    [98, 112, 137, 145, 163],                                         # structural
    [119, 147, 154, 177, 178],                                        # water
)


def _fine_to_coarse() -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, dtype=np.int64)
    for coarse, members in enumerate(_COARSE_MEMBERS):
        table[list(members)] = coarse
    return table


COCOSTUFF_FINE_TO_COARSE: np.ndarray = _fine_to_coarse()
"""Lookup ``table[fine] -> coarse`` over ``0..255`` (255 and unused values -> 255)."""


def _shift_table(n_classes: int, offset: int) -> np.ndarray:
    """Lookup that maps stored value ``v`` to ``v - offset`` for ``offset <= v < n + offset``."""
    table = np.full(256, IGNORE_INDEX, dtype=np.int64)
    table[offset:offset + n_classes] = np.arange(n_classes)
    return table


def _check_split(split: str, allowed=("train", "val")) -> str:
    if split not in allowed:
        raise ValueError(f"split must be one of {', '.join(map(repr, allowed))}; got {split!r}")
    return split


def _find_root(root, candidates: list[str], marker: str, name: str) -> Path:
    """The folder below ``root`` (one of ``candidates``) that holds ``marker``."""
    if root is None:
        raise ValueError(f"{name} needs root=, the folder of your local copy of the dataset")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{name} root {os.fspath(root)!r} does not exist")
    for sub in candidates:
        base = root / sub if sub else root
        if (base / marker).exists():
            return base
    tried = ", ".join(os.fspath(root / c / marker) if c else os.fspath(root / marker)
                      for c in candidates)
    raise FileNotFoundError(f"{name}: none of the expected folders exist ({tried}); check "
                            "root against the layout in spectralnet_seg.datasets.standard")


class FolderDataset(SegmentationDataset):
    """Image/label-file pairs with a lookup table from stored label values to class ids.

    Parameters
    ----------
    image_files, mask_files : list of path
        Paired files, in the same order.
    class_names : sequence of str
        Name of each class id.
    lookup : ndarray of shape (256,) or more, integer
        ``lookup[v]`` is the class id (or 255) of the stored label value ``v``.
    transform : callable, optional
        ``(image, mask) -> (image, mask)`` applied on access.
    """

    # Largest stored label value of the annotation format (255 aside): larger values are
    # refused, not silently ignored. Subclasses set their own.
    _max_raw_id = 254

    def __init__(self, image_files, mask_files, class_names, lookup, *, transform=None):
        if len(image_files) != len(mask_files):
            raise ValueError(f"{len(image_files)} images but {len(mask_files)} masks")
        self.image_files = [Path(p) for p in image_files]
        self.mask_files = [Path(p) for p in mask_files]
        self._class_names = list(class_names)
        self.lookup = np.asarray(lookup, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_files)

    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = load_image(self.image_files[index])
        mask = _read_mask(self.mask_files[index])
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {self.mask_files[index]} is {mask.shape[0]}x{mask.shape[1]} "
                             f"but its image is {image.shape[0]}x{image.shape[1]}")
        bad = ((mask > self._max_raw_id) & (mask != IGNORE_INDEX)) | (mask < 0)
        if bad.any():  # remap_labels would turn them into "ignore" without a word
            values = np.unique(mask[bad])
            raise ValueError(
                f"label file {self.mask_files[index]} holds values {values[:8].tolist()}"
                f"{' ...' if values.size > 8 else ''} beyond {type(self).__name__}'s label ids "
                f"0..{self._max_raw_id} (and {IGNORE_INDEX}); are these the annotations this "
                "reader expects (e.g. not the full 459-class Pascal Context or 16-bit ADE20K "
                "masks)?")
        return image, remap_labels(mask, self.lookup)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_images={len(self)}, n_classes={self.n_classes})"


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise ValueError(f"label file {path} has mode {img.mode!r}; expected a "
                                 "single-channel PNG of label ids (not a colour rendering)")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read label file {path}: it is corrupt or not an image "
                         f"({err})") from err


def _paired(images: list[Path], mask_of, name: str) -> tuple[list[Path], list[Path]]:
    if not images:
        raise ValueError(f"{name}: no images were found; check root and split")
    masks = [mask_of(p) for p in images]
    for kind, files in (("image", images), ("label", masks)):
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{name}: {len(missing)} {kind} files are missing, e.g. "
                                    f"{missing[0]}")
    return images, masks


def _read_list(path: Path, name: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{name}: image list {path} not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@register_dataset("pascal_context")
@register_dataset("pascal_context59")
class PascalContext(FolderDataset):
    """Pascal Context with 59 classes (background ignored) or 60 (background kept).

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``VOCdevkit/VOC2010`` (or that folder itself).
    split : {"train", "val"}, default="val"
    n_classes : {59, 60}, default=59
    transform : callable, optional
    """

    _max_raw_id = 59  # 0 background, 1..59 classes

    def __init__(self, root=None, split: str = "val", *, n_classes: int = 59, transform=None):
        if n_classes not in (59, 60):
            raise ValueError(f"n_classes must be 59 or 60, got {n_classes!r}")
        name = f"PascalContext{n_classes}"
        base = _find_root(root, ["VOCdevkit/VOC2010", "VOC2010", ""], "JPEGImages", name)
        ids = _read_list(base / "ImageSets" / "SegmentationContext" /
                         f"{_check_split(split)}.txt", name)
        images, masks = _paired([base / "JPEGImages" / f"{i}.jpg" for i in ids],
                                lambda p: base / "SegmentationClassContext" / f"{p.stem}.png",
                                name)
        if n_classes == 59:
            names, lookup = PASCAL_CONTEXT_59_CLASSES, _shift_table(59, 1)
        else:
            names, lookup = ("background", *PASCAL_CONTEXT_59_CLASSES), _shift_table(60, 0)
        super().__init__(images, masks, names, lookup, transform=transform)
        self.root, self.split = root, split


@register_dataset("pascal_context60")
def _pascal_context60(root=None, split: str = "val", **params) -> PascalContext:
    return PascalContext(root, split, n_classes=60, **params)


@register_dataset("cityscapes27")
class Cityscapes27(FolderDataset):
    """Cityscapes with the 27 classes of unsupervised segmentation (labelIds 7..33).

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``leftImg8bit`` and ``gtFine``.
    split : {"train", "val"}, default="val"
    transform : callable, optional
    """

    _max_raw_id = 33  # labelIds 0..33

    def __init__(self, root=None, split: str = "val", *, transform=None):
        base = _find_root(root, [""], "leftImg8bit", "Cityscapes27")
        split = _check_split(split)
        images = sorted((base / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))

        def mask_of(p: Path) -> Path:
            stem = p.name[: -len("_leftImg8bit.png")]
            return base / "gtFine" / split / p.parent.name / f"{stem}_gtFine_labelIds.png"

        images, masks = _paired(images, mask_of, "Cityscapes27")
        super().__init__(images, masks, CITYSCAPES_27_CLASSES, _shift_table(27, 7),
                         transform=transform)
        self.root, self.split = root, split


@register_dataset("ade20k")
@register_dataset("ade20k150")
class ADE20K(FolderDataset):
    """ADE20K SceneParsing with its 150 classes ("other" ignored).

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``ADEChallengeData2016`` (or that folder itself).
    split : {"train", "val"}, default="val"
    transform : callable, optional
    """

    _max_raw_id = 150  # 0 other, 1..150 classes

    def __init__(self, root=None, split: str = "val", *, transform=None):
        base = _find_root(root, ["ADEChallengeData2016", ""], "annotations", "ADE20K")
        folder = {"train": "training", "val": "validation"}[_check_split(split)]
        images = sorted((base / "images" / folder).glob("*.jpg"))
        images, masks = _paired(images, lambda p: base / "annotations" / folder /
                                f"{p.stem}.png", "ADE20K")
        super().__init__(images, masks, ADE20K_150_CLASSES, _shift_table(150, 1),
                         transform=transform)
        self.root, self.split = root, split


@register_dataset("cocostuff27")
class CocoStuff27(FolderDataset):
    """COCO-Stuff 164k mapped to 27 coarse classes (12 things + 15 stuff).

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``images``, ``annotations`` and ``curated``.
    split : {"train", "val"}, default="val"
    image_list : str, optional
        File name of the image list in ``curated/{split}2017``. Default: the curated lists
        of unsupervised segmentation work, ``Coco164kFull_Stuff_Coarse_7.txt`` for ``val``
        and ``Coco164kFull_Stuff_Coarse.txt`` for ``train``. ``"all"`` uses every image of
        the split folder.
    transform : callable, optional
    """

    _max_raw_id = 181  # fine ids 0..181

    def __init__(self, root=None, split: str = "val", *, image_list: str | None = None,
                 transform=None):
        base = _find_root(root, ["cocostuff", ""], "annotations", "CocoStuff27")
        folder = f"{_check_split(split)}2017"
        if image_list == "all":
            images = sorted((base / "images" / folder).glob("*.jpg"))
        else:
            if image_list is None:
                image_list = ("Coco164kFull_Stuff_Coarse_7.txt" if split == "val"
                              else "Coco164kFull_Stuff_Coarse.txt")
            ids = _read_list(base / "curated" / folder / image_list, "CocoStuff27")
            images = [base / "images" / folder / f"{i}.jpg" for i in ids]
        images, masks = _paired(images, lambda p: base / "annotations" / folder /
                                f"{p.stem}.png", "CocoStuff27")
        super().__init__(images, masks, COCOSTUFF_27_CLASSES, COCOSTUFF_FINE_TO_COARSE,
                         transform=transform)
        self.root, self.split = root, split
