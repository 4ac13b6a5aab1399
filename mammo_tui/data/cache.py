"""On-disk cache of preprocessed images (decoded, windowed, resize_pad'ed), shared between runs.

Key = sha1 of the file's content + the preprocessing parameters + PREPROCESS_VERSION, so an edited
file, another image size or a changed decoding rule never reuses a stale entry. Entries are float16
.npy files written atomically (temporary file in the same folder + os.replace): two runs sharing
the cache can never read a half-written entry, and the last writer wins with identical bytes.

Content hashes are memoised by (path, size, mtime_ns, ctime_ns, inode), in memory and in a small
on-disk index, so a warm run reads neither the images nor their hashes' inputs again. The memo
assumes a file whose bytes change also changes one of these: writing a file sets its mtime and
ctime, and restoring the mtime (touch -d, os.utime, cp -p, rsync -t) sets ctime to now, which no
user tool can set back; replacing the file (mv, os.replace) gives a new inode. What could slip
through: an in-place rewrite within the same timestamp tick (a few ms) as the hashing, an edit
made with the system clock set back, or a file system without a change time (on Windows st_ctime
is the creation time). After such an edit, delete the cache folder's content-hashes/.

check_decodes() remembers, under the cache folder, which contents decoded to finite 2-D pixels
with this decoder version, so the dataset scan decodes each image once, not every plan/train/eval.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL
import pydicom
from numpy.typing import DTypeLike

from mammo_tui.data import dicom
from mammo_tui.data.images import preprocess, read_image
from mammo_tui.data.records import ImageReadError, ImageRecord
from mammo_tui.errors import DatasetError

# Bump when decoding or resizing changes what an image looks like: old entries become unreachable.
# 2: images with non-finite pixels, multi-frame images and unknown syntaxes are refused.
PREPROCESS_VERSION = 2
# What decides whether a content decodes: our rules and the decoder libraries' versions. A
# "decodes fine" record under another version is not trusted (e.g. after upgrading pydicom).
DECODER_VERSION = (f"v{PREPROCESS_VERSION}|pydicom {pydicom.__version__}|pillow {PIL.__version__}"
                   f"|numpy {np.__version__}")
CACHE_ENV = "MAMMO_TUI_CACHE"
CACHE_DTYPE = np.float16  # values in [0, 1]: float16 keeps ~3 decimal digits, half the memory

# (abspath, size, mtime_ns, ctime_ns, inode) -> sha1, least recently used first; bounded so a huge
# dataset (or many datasets in one process) cannot grow it without limit: evicted entries come
# back from the index.
_HASH_MEMO_MAX = 100_000
MemoKey = tuple[str, int, int, int, int]
_hash_memo: OrderedDict[MemoKey, str] = OrderedDict()
_hash_memo_lock = threading.Lock()


def default_cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mammo-tui"


def _write_atomic(target: Path, payload: Callable[[object], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            payload(handle)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _memo_key(path: str) -> MemoKey:
    """What identifies one version of a file without reading it (see the module docstring)."""
    stat = os.stat(path)
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


def _hash_index_file(root: Path, memo_key: MemoKey) -> Path:
    name = hashlib.sha1(repr(memo_key).encode()).hexdigest()
    return root / "content-hashes" / name[:2] / name


def content_hash(path: str | os.PathLike, root: str | os.PathLike | None = None,
                 on_write_error: Callable[[OSError], None] | None = None) -> str:
    """sha1 of the file's bytes, computed once per (path, size, mtime_ns, ctime_ns, inode).

    The one content-hash routine: the dataset scan (duplicate content) and PreprocessCache (entry
    keys) both call it, so a file's bytes are read for hashing once: later calls hit the in-memory
    memo, later processes the on-disk index under root/content-hashes (root: the cache folder).
    An index that cannot be written is reported to on_write_error (if given) and otherwise ignored.
    Raises OSError when the file cannot be read.
    """
    path = os.fspath(path)
    memo_key = _memo_key(path)
    with _hash_memo_lock:
        known = _hash_memo.get(memo_key)
        if known:
            _hash_memo.move_to_end(memo_key)
            return known
    index_file = _hash_index_file(Path(root).expanduser() if root is not None else default_cache_root(), memo_key)
    try:
        digest = index_file.read_text().strip()
    except (OSError, UnicodeDecodeError):
        digest = ""
    if len(digest) != 40:
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha1").hexdigest()  # streamed: bounded memory
        try:
            _write_atomic(index_file, lambda h: h.write(digest.encode()))
        except OSError as error:
            if on_write_error is not None:
                on_write_error(error)
    with _hash_memo_lock:
        _hash_memo[memo_key] = digest
        _hash_memo.move_to_end(memo_key)
        while len(_hash_memo) > _HASH_MEMO_MAX:
            _hash_memo.popitem(last=False)
    return digest


def _decoded_marker(root: Path, digest: str) -> Path:
    name = hashlib.sha1(f"{digest}|{DECODER_VERSION}".encode()).hexdigest()
    return root / "decoded" / name[:2] / name


def check_decodes(path: str | os.PathLike, digest: str, root: str | os.PathLike | None = None) -> None:
    """Decode the image the way training will (read_image: finite, 2-D), unless content `digest`
    already decoded fine under DECODER_VERSION; raises ImageReadError naming the file.

    Only success is remembered (an empty marker file under root/decoded): a bad image is decoded
    again next time, so a fixed decoder or plugin is noticed. A marker that cannot be written
    costs a decode next time, nothing else.
    """
    marker = _decoded_marker(Path(root).expanduser() if root is not None else default_cache_root(), digest)
    if marker.is_file():
        return
    read_image(path)
    try:
        _write_atomic(marker, lambda handle: None)
    except OSError:
        pass


class PreprocessCache:
    def __init__(self, img_size: int, root: str | os.PathLike | None = None, crop_breast: bool = False) -> None:
        self.img_size = int(img_size)
        self.crop_breast = bool(crop_breast)
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self.decodes = 0  # images decoded from their source file
        self.hits = 0  # images served from the cache
        self.warnings: list[str] = []  # e.g. the cache folder is not writable (loading still works)
        self._lock = threading.Lock()
        self._params = (f"v{PREPROCESS_VERSION}|size={self.img_size}|dtype={np.dtype(CACHE_DTYPE).name}"
                        f"|window={dicom.WINDOW_PERCENTILES}|tissue={dicom.TISSUE_THRESHOLD}"
                        f"|crop={int(self.crop_breast)}")

    # -- keys -------------------------------------------------------------------------------
    def content_hash(self, path: str) -> str:
        """sha1 of the file's bytes, memoised by the file's stat (see content_hash)."""
        return content_hash(path, self.root, self._unwritable)

    def key(self, path: str) -> str:
        return hashlib.sha1(f"{self.content_hash(path)}|{self._params}".encode()).hexdigest()

    def entry_path(self, path: str) -> Path:
        key = self.key(path)
        return self.root / "images" / key[:2] / f"{key}.npy"

    # -- load -------------------------------------------------------------------------------
    def load(self, path: str | os.PathLike, dtype: DTypeLike = np.float32) -> np.ndarray:
        """img_size x img_size in [0, 1] (float32 by default); decodes only on a cache miss.

        dtype=CACHE_DTYPE returns the stored array without a conversion (what load_images uses).
        Raises ImageReadError when the file cannot be decoded.
        """
        path = os.fspath(path)
        entry = self.entry_path(path)
        try:
            image = np.load(entry, allow_pickle=False)
            if image.shape == (self.img_size, self.img_size) and np.isfinite(image).all():
                with self._lock:
                    self.hits += 1
                return image.astype(dtype, copy=False)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, EOFError):
            pass  # a damaged entry (e.g. disk full earlier) is simply rebuilt
        stored = preprocess(path, self.img_size, self.crop_breast).astype(CACHE_DTYPE)
        with self._lock:
            self.decodes += 1
        self._try_write(entry, lambda handle: np.save(handle, stored, allow_pickle=False))
        # return the stored precision, so a cold and a warm run see identical pixels
        return stored.astype(dtype, copy=False)

    def _try_write(self, target: Path, payload: Callable[[object], None]) -> None:
        try:
            _write_atomic(target, payload)
        except OSError as error:
            self._unwritable(error)

    def _unwritable(self, error: OSError) -> None:
        message = (f"preprocess cache {self.root} is not writable ({error.strerror}); images are decoded "
                   f"every run. Set {CACHE_ENV} to a writable folder.")
        with self._lock:
            if message not in self.warnings:
                self.warnings.append(message)


def load_images(
    records: Sequence[ImageRecord],
    cache: PreprocessCache,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> np.ndarray:
    """Preload a dataset into memory once: float16 array [N, S, S] in [0, 1], in records' order.

    A file that cannot be decoded raises DatasetError. workers > 1 loads with threads: it helps on
    slow (network) storage; decoding itself is mostly GIL-bound, so on local disks it gains little.
    """
    size = cache.img_size
    images = np.empty((len(records), size, size), dtype=CACHE_DTYPE)
    total = len(records)

    def load_one(index: int) -> None:
        images[index] = cache.load(records[index].path, dtype=CACHE_DTYPE)

    if progress:
        progress(0, total)
    try:
        if workers <= 1:
            for done, index in enumerate(range(total), start=1):
                load_one(index)
                if progress:
                    progress(done, total)
        else:
            pool = ThreadPoolExecutor(max_workers=workers)
            try:
                for done, _ in enumerate(pool.map(load_one, range(total)), start=1):
                    if progress:
                        progress(done, total)
            finally:
                pool.shutdown(cancel_futures=True)  # stop at the first bad file
    except ImageReadError as error:
        raise DatasetError(f"Cannot load an image for training ({error.kind}): {error.message}. The file "
                           "changed since the dataset was checked; remove or replace it and run again.") from None
    except OSError as error:
        raise DatasetError(f"Cannot read an image for training: {error.filename}: {error.strerror}. "
                           "Check that the dataset did not move since it was checked.") from None
    return images
