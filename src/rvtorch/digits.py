"""The 8x8 digits, split into non-IID federated-learning shards, in one small binary file.

Both federated-learning schemes read the same file: the C++ FastFlow programs
(``src/rvtorch/validate/cpp/fastflow_fl``) and any Python scheme, so their results compare on
identical data. The host makes it (scikit-learn ships the digits inside its package, no network);
reading needs only the standard library, so target-side code can read it too.

File format (all little-endian; documented in docs/fastflow.md)::

    magic      8 bytes   b"RVFLDIG1"
    header     7 x u32   n_features, n_classes, n_shards, n_test, seed, alpha_milli, test_milli
    sizes      n_shards x u32            samples in each training shard
    shards     per shard: f32[size * n_features] features, i32[size] labels
    test       f32[n_test * n_features] features, i32[n_test] labels

Features are the pixel counts divided by 16 (range 0..1). The held-out test set is stratified
(``test_fraction`` of every class). Training samples are spread over the shards non-IID by label:
for every class a Dirichlet(``alpha``) draw decides which share of that class each shard gets
(the usual label-skew split of the federated-learning literature; small alpha = more skew).
Everything is drawn from one seeded generator, so the same arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from array import array
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError, ValidationError

MAGIC = b"RVFLDIG1"
_HEADER = struct.Struct("<8s7I")
N_FEATURES = 64
N_CLASSES = 10
# A shard smaller than this cannot fill one SGD batch: redraw instead.
MIN_SHARD = 16
_MAX_DRAWS = 1000


@dataclass(frozen=True)
class Split:
    """Features (row-major, ``n * n_features`` floats) and labels of one set."""

    x: array  # array('f')
    y: array  # array('i')

    def __len__(self) -> int:
        return len(self.y)

    def label_counts(self, n_classes: int = N_CLASSES) -> list[int]:
        counts = [0] * n_classes
        for label in self.y:
            counts[label] += 1
        return counts


@dataclass(frozen=True)
class Shards:
    """Training shards plus the held-out test set, with the parameters that made them."""

    shards: tuple[Split, ...]
    test: Split
    seed: int
    alpha: float
    test_fraction: float
    n_features: int = N_FEATURES
    n_classes: int = N_CLASSES

    def to_bytes(self) -> bytes:
        parts = [
            _HEADER.pack(
                MAGIC, self.n_features, self.n_classes, len(self.shards), len(self.test),
                self.seed, round(self.alpha * 1000), round(self.test_fraction * 1000),
            ),
            struct.pack(f"<{len(self.shards)}I", *(len(s) for s in self.shards)),
        ]
        for split in (*self.shards, self.test):
            parts.append(_le_bytes(split.x))
            parts.append(_le_bytes(split.y))
        return b"".join(parts)

    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()


def _le_bytes(a: array) -> bytes:
    if a.itemsize != 4:
        raise ValueError(f"expected 4-byte items, got {a.itemsize}")
    if struct.pack("=I", 1) != struct.pack("<I", 1):
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _from_le(typecode: str, data: bytes) -> array:
    a = array(typecode)
    a.frombytes(data)
    if struct.pack("=I", 1) != struct.pack("<I", 1):
        a.byteswap()
    return a


def make_shards(
    n_shards: int, *, seed: int = 0, alpha: float = 0.5, test_fraction: float = 0.2
) -> Shards:
    """Load the digits (scikit-learn) and split them; raises UsageError on bad arguments."""
    if n_shards < 1:
        raise UsageError(f"need at least one shard, got {n_shards}")
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"test fraction must lie in (0, 1), got {test_fraction}")
    if alpha <= 0.0:
        raise UsageError(f"Dirichlet alpha must be > 0, got {alpha}")
    try:
        import numpy as np
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise UsageError(
            "exporting the digits needs scikit-learn on the host",
            hint="pip install scikit-learn (it ships the 8x8 digits, no download)",
        ) from exc

    data = load_digits()
    x_all = (np.asarray(data.data, dtype=np.float32) / np.float32(16.0)).astype(np.float32)
    y_all = np.asarray(data.target, dtype=np.int32)
    rng = np.random.RandomState(seed)

    test_idx: list[int] = []
    train_by_class: list[np.ndarray] = []
    for c in range(N_CLASSES):
        idx = np.flatnonzero(y_all == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = round(len(idx) * test_fraction)
        test_idx.extend(idx[:n_test].tolist())
        train_by_class.append(idx[n_test:])
    n_train = sum(len(i) for i in train_by_class)
    if n_train < n_shards * MIN_SHARD:
        raise UsageError(
            f"{n_shards} shards of at least {MIN_SHARD} samples need {n_shards * MIN_SHARD} "
            f"training digits, there are {n_train}"
        )

    for _ in range(_MAX_DRAWS):
        members: list[list[int]] = [[] for _ in range(n_shards)]
        for idx in train_by_class:
            share = rng.dirichlet([alpha] * n_shards)
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
            for s, part in enumerate(np.split(idx, cuts)):
                members[s].extend(part.tolist())
        if min(len(m) for m in members) >= MIN_SHARD:
            break
    else:  # pragma: no cover - needs an absurd alpha/shard count
        raise UsageError(
            f"no Dirichlet({alpha}) split gave every one of {n_shards} shards {MIN_SHARD} samples",
            hint="raise alpha or use fewer shards",
        )

    def split_of(indices: list[int]) -> Split:
        order = np.asarray(sorted(indices), dtype=np.int64)
        order = order[rng.permutation(len(order))]
        return Split(
            x=array("f", x_all[order].reshape(-1).tolist()),
            y=array("i", y_all[order].tolist()),
        )

    shards = tuple(split_of(m) for m in members)
    return Shards(shards=shards, test=split_of(test_idx), seed=seed, alpha=alpha,
                  test_fraction=test_fraction)


def write_shards(shards: Shards, path: Path) -> Path:
    """Write atomically (temp file + rename): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(shards.to_bytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_shards(path: Path) -> Shards:
    """Parse a shards file (standard library only); a malformed file is a ValidationError."""
    data = Path(path).read_bytes()
    if len(data) < _HEADER.size:
        raise ValidationError(f"{path}: too short for a shards file ({len(data)} bytes)")
    magic, n_feat, n_cls, n_shards, n_test, seed, alpha_m, test_m = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValidationError(f"{path}: not a shards file (magic {magic!r}, expected {MAGIC!r})")
    off = _HEADER.size
    sizes = struct.unpack_from(f"<{n_shards}I", data, off)
    off += 4 * n_shards
    expected = off + sum(4 * n * (n_feat + 1) for n in (*sizes, n_test))
    if len(data) != expected:
        raise ValidationError(f"{path}: {len(data)} bytes, the header promises {expected}")

    def take(n: int) -> Split:
        nonlocal off
        x = _from_le("f", data[off : off + 4 * n * n_feat])
        off += 4 * n * n_feat
        y = _from_le("i", data[off : off + 4 * n])
        off += 4 * n
        return Split(x=x, y=y)

    shards = tuple(take(n) for n in sizes)
    test = take(n_test)
    return Shards(shards=shards, test=test, seed=seed, alpha=alpha_m / 1000,
                  test_fraction=test_m / 1000, n_features=n_feat, n_classes=n_cls)


def ensure_shards(n_shards: int, *, seed: int = 0, alpha: float = 0.5,
                  test_fraction: float = 0.2, cache: Path | None = None) -> Path:
    """The shards file for these arguments, made once and kept under the rvtorch cache."""
    from .paths import cache_dir

    root = cache if cache is not None else cache_dir() / "digits"
    name = f"digits-n{n_shards}-s{seed}-a{round(alpha * 1000)}-t{round(test_fraction * 1000)}.bin"
    path = root / name
    if not path.exists():
        write_shards(make_shards(n_shards, seed=seed, alpha=alpha, test_fraction=test_fraction),
                     path)
    return path
