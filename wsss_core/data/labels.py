"""Image-level labels: from masks, or from a labels file.

Labels-file formats, chosen by suffix:

* ``.json``: ``{"<image id>": [c, ...], ...}`` with foreground class indices
  ``c`` in 1..C (the mask values of the classes present).
* ``.txt`` / ``.tsv``: one line per image, ``<image id> c c ...`` separated by
  whitespace or tabs, same indices as above (an image with no class has only its id).
* ``.npy``: the ``cls_labels.npy`` of the reference codebases (psa, SEAM, IRN):
  a pickled dict ``{image id: float vector [C]}``. Keys may be the string id
  (psa, SEAM) or IRN's integer form (``2007_000032`` -> ``2007000032``).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from wsss_core.data.errors import DataError

IGNORE_INDEX = 255


def labels_from_mask(mask: np.ndarray, num_foreground: int, *, source: str = "mask") -> np.ndarray:
    """Image labels [C] float32 from a mask [H, W]: every value other than 0 and 255.

    Raises ValueError naming `source` if the mask holds a value outside {0..C, 255}.
    """
    values = np.unique(mask)
    present = values[(values != 0) & (values != IGNORE_INDEX)]
    bad = present[present > num_foreground]
    if bad.size:
        raise DataError(
            f"{source}: mask value {int(bad[0])} is not a class index; allowed 0..{num_foreground} and {IGNORE_INDEX}"
        )
    labels = np.zeros(num_foreground, dtype=np.float32)
    labels[present.astype(np.int64) - 1] = 1.0
    return labels


def read_label_file(path: str | Path, num_foreground: int) -> dict[str, np.ndarray]:
    """Read a labels file (format by suffix, see module doc) -> {image id: float32 [C]}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path, num_foreground)
    if suffix == ".json":
        try:
            entries = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise DataError(f"{path}: not valid JSON ({str(error).splitlines()[0]})") from None
        if not isinstance(entries, dict) or not all(isinstance(c, list) for c in entries.values()):
            raise DataError(f"{path}: expected a JSON object of image id -> list of class indices")
        return {str(name): _one_hot(classes, num_foreground, path) for name, classes in entries.items()}
    if suffix in (".txt", ".tsv"):
        table = {}
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if not all(c.lstrip("-").isdigit() for c in fields[1:]):
                raise DataError(f"{path}: line {number} is {line.strip()!r}; allowed: an image id, then class indices")
            table[fields[0]] = _one_hot([int(c) for c in fields[1:]], num_foreground, path)
        return table
    raise DataError(f"labels file {path}: unknown suffix {suffix!r}; allowed .json, .txt, .tsv, .npy")


def lookup_labels(table: dict[str, np.ndarray], name: str, path: str | Path) -> np.ndarray:
    """The labels of image `name`, accepting IRN's integer keys; one-line error if absent."""
    labels = table.get(name)
    if labels is None:
        labels = table.get(name.replace("_", ""))
    if labels is None:
        raise DataError(f"image {name} has no entry in labels file {path}")
    return labels


def _one_hot(classes: list[int], num_foreground: int, path: Path) -> np.ndarray:
    labels = np.zeros(num_foreground, dtype=np.float32)
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= num_foreground:
            raise DataError(f"{path}: class index {c!r} out of range; allowed 1..{num_foreground}")
        labels[int(c) - 1] = 1.0
    return labels


def _read_npy(path: Path, num_foreground: int) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=True)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise DataError(f"{path}: not a readable .npy file ({str(error).splitlines()[0]})") from None
    table = loaded.item() if loaded.dtype == object and loaded.shape == () else None
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected a pickled dict of image id -> label vector (cls_labels.npy format)")
    result = {}
    for name, vector in table.items():
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != num_foreground:
            raise DataError(f"{path}: label vector of {name} has {vector.shape[0]} entries; expected {num_foreground}")
        result[str(name)] = vector
    return result
