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
Given the preprocessing parameters (known before the scan when the config is), it also writes the
image's preprocessed entry from the same decode, so a first run decodes each image once.

Decoding runs in worker processes (decode_pool: spawned, so a Textual or torch thread is never
forked); each worker holds one decoded image at a time. load_images() then gathers the entries
into one .npy per (dataset content, preprocessing parameters) under datasets/, opened memory-mapped
read-only: DataLoader workers and every torchrun rank on a machine share one copy in the page
cache. Above the memory budget (MEMORY_BUDGET_ENV, else MEMORY_BUDGET_FRACTION of RAM) images are
streamed from their per-image entries instead.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import multiprocessing
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import PIL
import pydicom
from numpy.typing import DTypeLike

from mammo_tui.data import dicom
from mammo_tui.data.images import preprocess, probe, read_image
from mammo_tui.data.records import ImageReadError, ImageRecord, require_regular_file
from mammo_tui.errors import ConfigError, DatasetError

# Bump when decoding or resizing changes what an image looks like: old entries become unreachable.
# 2: images with non-finite pixels, multi-frame images and unknown syntaxes are refused.
# 3: the percentile window is read from a grid of the pixels (full-field images: 1 in 9).
# 4: the breast crop: no extension to the chest wall edge, the image's side when clear, the chest
#    wall kept at the input's left edge.
PREPROCESS_VERSION = 4
# What decides whether a content decodes: our rules and the decoder libraries' versions. A
# "decodes fine" record under another version is not trusted (e.g. after upgrading pydicom).
DECODER_VERSION = (f"v{PREPROCESS_VERSION}|pydicom {pydicom.__version__}|pillow {PIL.__version__}"
                   f"|numpy {np.__version__}")
CACHE_ENV = "MAMMO_TUI_CACHE"
CACHE_DTYPE = np.float16  # values in [0, 1]: float16 keeps ~3 decimal digits, half the memory
MEMORY_BUDGET_ENV = "MAMMO_TUI_MEMORY_BUDGET"  # bytes, or with a K/M/G suffix
MEMORY_BUDGET_FRACTION = 0.5  # of physical RAM: leaves room for the model, the loaders and the OS

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
    Raises OSError when the file cannot be read, ImageReadError when it is not a regular file.
    """
    path = os.fspath(path)
    require_regular_file(path)  # a FIFO or /dev/zero would never finish hashing
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


def resolve_workers(workers: int | None = None) -> int:
    """Worker processes for decoding: workers when > 0, else (<= 0 or None) all cores but one (at
    least 1). The callers pass the user's choice (--workers, config preprocess_workers) down."""
    workers = -1 if workers is None else int(workers)
    return workers if workers > 0 else max(1, (os.cpu_count() or 2) - 1)


def imap_workers(func: Callable, items: Sequence, workers: int | None) -> Iterator:
    """func over items, results in order: here when one worker is enough, else in worker processes.

    Spawned, not forked: the TUI and torch run threads, and forking a threaded process can
    deadlock. func must be picklable (a module-level function or a partial of one).
    """
    workers = min(resolve_workers(workers), len(items))
    if workers <= 1:
        yield from map(func, items)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield from pool.map(func, items)
    finally:
        pool.shutdown(cancel_futures=True)  # stop at the first error or when the caller stops


def _params(img_size: int, crop_breast: bool) -> str:
    return (f"v{PREPROCESS_VERSION}|size={int(img_size)}|dtype={np.dtype(CACHE_DTYPE).name}"
            f"|window={dicom.WINDOW_PERCENTILES}|tissue={dicom.TISSUE_THRESHOLD}|crop={int(bool(crop_breast))}")


def _entry_path(root: Path, digest: str, params: str) -> Path:
    key = hashlib.sha1(f"{digest}|{params}".encode()).hexdigest()
    return root / "images" / key[:2] / f"{key}.npy"


def _preprocess_stored(path: str, img_size: int, crop_breast: bool) -> np.ndarray:
    # the one conversion to the stored precision, so cold, warm, serial and parallel runs agree
    return preprocess(path, img_size, crop_breast).astype(CACHE_DTYPE)


def check_decodes(path: str | os.PathLike, digest: str, root: str | os.PathLike | None = None,
                  preprocessing=None) -> None:
    """Decode the image the way training will (read_image: finite, 2-D), unless content `digest`
    already decoded fine under DECODER_VERSION; raises ImageReadError naming the file.

    With a preprocessing (preprocessing.Preprocessing) the decode is the preprocessing itself (preprocess() decodes with read_image),
    and its result is stored as the cache entry, so training finds it without decoding again.
    Only success is remembered (an empty marker file under root/decoded): a bad image is decoded
    again next time, so a fixed decoder or plugin is noticed. A marker or an entry that cannot be
    written costs a decode later, nothing else.
    """
    root = Path(root).expanduser() if root is not None else default_cache_root()
    marker = _decoded_marker(root, digest)
    entry = (_entry_path(root, digest, _params(preprocessing.img_size, preprocessing.crop_breast))
             if preprocessing is not None else None)
    if marker.is_file() and (entry is None or entry.is_file()):
        return
    if entry is None:
        read_image(path)
    else:
        stored = _preprocess_stored(os.fspath(path), preprocessing.img_size, preprocessing.crop_breast)
        try:
            _write_atomic(entry, lambda handle: np.save(handle, stored, allow_pickle=False))
        except OSError:
            pass
    try:
        _write_atomic(marker, lambda handle: None)
    except OSError:
        pass


def check_image(path: str, root: str | None = None, preprocessing=None) -> tuple:
    """The scan's per-image work (header probe, content hash, decode check), for a worker process.

    Returns ("ok", ImageInfo, patient digest | None, content sha1) or a picklable failure:
    ("image", kind, message) for an ImageReadError, ("os", strerror) for an OSError, or
    ("other", exception type name, message) for anything else.
    """
    try:
        info, patient = probe(path)
        digest = content_hash(path, root)
        check_decodes(path, digest, root, preprocessing)
        return "ok", info, patient, digest
    except ImageReadError as error:  # its (kind, message) constructor does not unpickle: sent as values
        return "image", error.kind, error.message
    except OSError as error:
        return "os", str(error.strerror or error)
    except Exception as error:  # noqa: BLE001 - one odd file is that file's problem, reported by the scan
        return "other", type(error).__name__, str(error)


class PreprocessCache:
    def __init__(self, img_size: int, root: str | os.PathLike | None = None, crop_breast: bool = False) -> None:
        self.img_size = int(img_size)
        self.crop_breast = bool(crop_breast)
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self.decodes = 0  # images decoded from their source file
        self.hits = 0  # images served from the cache
        self.warnings: list[str] = []  # e.g. the cache folder is not writable (loading still works)
        self._lock = threading.Lock()
        self._params = _params(self.img_size, self.crop_breast)

    @classmethod
    def of(cls, preprocessing, root: str | os.PathLike | None = None) -> "PreprocessCache":
        """The cache entries of one preprocessing.Preprocessing (its size and crop key them)."""
        return cls(preprocessing.img_size, root, crop_breast=preprocessing.crop_breast)

    def __getstate__(self) -> dict:
        # sent to DataLoader workers inside StreamedImages: a lock does not pickle
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- keys -------------------------------------------------------------------------------
    def content_hash(self, path: str) -> str:
        """sha1 of the file's bytes, memoised by the file's stat (see content_hash)."""
        return content_hash(path, self.root, self._unwritable)

    def key(self, path: str) -> str:
        return hashlib.sha1(f"{self.content_hash(path)}|{self._params}".encode()).hexdigest()

    def entry_path(self, path: str) -> Path:
        return _entry_path(self.root, self.content_hash(path), self._params)

    def dataset_path(self, paths: Sequence[str]) -> Path:
        """The one memory-mapped file for these images' contents, in this order, with these params."""
        digest = hashlib.sha1("\n".join(self.key(p) for p in paths).encode()).hexdigest()
        return self.root / "datasets" / f"{digest}-{len(paths)}x{self.img_size}.npy"

    # -- load -------------------------------------------------------------------------------
    def cached(self, path: str | os.PathLike) -> np.ndarray | None:
        """The stored entry (CACHE_DTYPE) when present and sound, else None."""
        try:
            image = np.load(self.entry_path(os.fspath(path)), allow_pickle=False)
        except (OSError, ValueError, EOFError):  # missing, or damaged (e.g. disk full earlier): rebuilt
            return None
        if image.shape == (self.img_size, self.img_size) and np.isfinite(image).all():
            with self._lock:
                self.hits += 1
            return image
        return None

    def store(self, path: str | os.PathLike, stored: np.ndarray) -> None:
        """Keep a freshly preprocessed image (from any process) as its entry."""
        with self._lock:
            self.decodes += 1
        self._try_write(self.entry_path(os.fspath(path)), lambda handle: np.save(handle, stored, allow_pickle=False))

    def load(self, path: str | os.PathLike, dtype: DTypeLike = np.float32) -> np.ndarray:
        """img_size x img_size in [0, 1] (float32 by default); decodes only on a cache miss.

        dtype=CACHE_DTYPE returns the stored array without a conversion (what load_images uses).
        Raises ImageReadError when the file cannot be decoded.
        """
        path = os.fspath(path)
        image = self.cached(path)
        if image is None:
            image = _preprocess_stored(path, self.img_size, self.crop_breast)
            self.store(path, image)
        # the stored precision either way, so a cold and a warm run see identical pixels
        return image.astype(dtype, copy=False)

    def _try_write(self, target: Path, payload: Callable[[object], None]) -> None:
        try:
            _write_atomic(target, payload)
        except OSError as error:
            self._unwritable(error)

    def _unwritable(self, error: OSError) -> None:
        message = (f"preprocess cache {self.root} is not writable ({error.strerror}); images are decoded "
                   f"every run. Set {CACHE_ENV} to a writable folder.")
        self.warn(message)

    def warn(self, message: str) -> None:
        with self._lock:
            if message not in self.warnings:
                self.warnings.append(message)


def _parse_bytes(text: str) -> int:
    """A positive, finite size in bytes ("8G", "512M", "1.5e9"); ValueError otherwise."""
    text = text.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
    value = float(text[:-1] if scale > 1 else text) * scale
    if not math.isfinite(value) or value < 1:
        raise ValueError(text)
    return int(value)


def memory_budget() -> int:
    """Bytes the preprocessed dataset may take in memory: MEMORY_BUDGET_ENV, else a share of RAM.
    A value that is not a size is refused, naming the variable (it used to be ignored silently)."""
    configured = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    if configured:
        try:
            return _parse_bytes(configured)
        except ValueError:
            raise ConfigError(f"{MEMORY_BUDGET_ENV}={configured!r} is not a memory size: give bytes or a "
                              "number with K, M or G (e.g. 8G), above 0; or unset it for half of the RAM") from None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: no limit
    return int(ram * MEMORY_BUDGET_FRACTION)


def _gigabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


class MappedImages:
    """float16 [N, S, S] read-only from a memory-mapped .npy. Pickles as its path, so a DataLoader
    worker or another process maps the same file (one copy in the page cache) instead of a copy."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.array = np.load(self.path, mmap_mode="r")

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index):
        return self.array[index]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.array, dtype=dtype)

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])


class StreamedImages:
    """Images read from their per-image cache entries on each access (datasets over the memory
    budget): nothing is held; a missing or damaged entry is decoded again."""

    def __init__(self, paths: Sequence[str], cache: PreprocessCache) -> None:
        self.paths = list(paths)
        self.cache = cache
        self.shape = (len(self.paths), cache.img_size, cache.img_size)
        self.dtype = np.dtype(CACHE_DTYPE)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.cache.load(self.paths[int(index)], dtype=CACHE_DTYPE)

    def __array__(self, dtype=None, copy=None):
        return np.stack([self[i] for i in range(len(self))]).astype(dtype or self.dtype, copy=False)


class _BuildLock:
    """An exclusive flock next to the dataset file: the first process (e.g. torchrun's rank 0)
    preprocesses and builds; the others wait here, then map what it built. No lock when the
    folder is not writable (nothing is built there either)."""

    def __init__(self, target: Path) -> None:
        self.file = target.with_suffix(".lock")
        self.handle = None

    def __enter__(self) -> "_BuildLock":
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.file, "a")
            fcntl.flock(self.handle, fcntl.LOCK_EX)
        except OSError:
            self.handle = None
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.close()  # releases the lock


def _open_mapped(target: Path) -> MappedImages | None:
    try:
        return MappedImages(target)
    except (OSError, ValueError, EOFError):
        return None


def _new_dataset_file(target: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, str | None]:
    """A temporary memory-mapped .npy beside target to fill (tmp path returned), or an in-memory
    array (tmp None) when the folder is not writable."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".npy")
        os.close(fd)
        return np.lib.format.open_memmap(tmp, mode="w+", dtype=CACHE_DTYPE, shape=shape), tmp
    except OSError:
        return np.empty(shape, dtype=CACHE_DTYPE), None


def _fill(out: np.ndarray | None, paths: Sequence[str], cache: PreprocessCache,
          tick: Callable[[], None], workers: int | None) -> None:
    """Every image into out (or only into the cache when out is None): entries first, then the
    misses decoded in worker processes, each stored as its entry as it arrives."""
    misses = []
    for index, path in enumerate(paths):
        image = cache.cached(path) if out is not None or not cache.entry_path(path).is_file() else True
        if image is None:
            misses.append(index)
            continue
        if out is not None:
            out[index] = image
        tick()
    job = _partial_preprocess(cache.img_size, cache.crop_breast)
    for index, result in zip(misses, imap_workers(job, [paths[i] for i in misses], workers)):
        if isinstance(result, tuple):
            raise ImageReadError(*result)
        cache.store(paths[index], result)
        if out is not None:
            out[index] = result
        tick()


def _preprocess_or_error(path: str, img_size: int, crop_breast: bool) -> np.ndarray | tuple[str, str]:
    """Worker job: the stored image, or (kind, message) of its ImageReadError (which does not unpickle)."""
    try:
        return _preprocess_stored(path, img_size, crop_breast)
    except ImageReadError as error:
        return error.kind, error.message


def _partial_preprocess(img_size: int, crop_breast: bool) -> Callable:
    from functools import partial

    return partial(_preprocess_or_error, img_size=img_size, crop_breast=crop_breast)


def _gather(paths: Sequence[str], cache: PreprocessCache, target: Path, tick: Callable[[], None],
            workers: int | None) -> MappedImages | np.ndarray:
    """Build the dataset file atomically (temporary file + rename: a concurrent reader never sees
    half of it) and map it; in memory when the cache folder is not writable."""
    out, tmp = _new_dataset_file(target, (len(paths), cache.img_size, cache.img_size))
    try:
        _fill(out, paths, cache, tick, workers)
        if tmp is None:
            return out
        out.flush()
        del out
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return _open_mapped(target) or np.load(target)


def load_images(
    records: Sequence[ImageRecord],
    cache: PreprocessCache,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    budget: int | None = None,
) -> MappedImages | StreamedImages | np.ndarray:
    """The dataset as float16 [N, S, S] in [0, 1], in records' order, decoding each image at most once.

    Usually one read-only memory-mapped file per (dataset content, preprocessing params), shared by
    processes and reused by later runs; above `budget` bytes (default memory_budget()) images are
    streamed from their cache entries (said in cache.warnings); in memory when the cache folder is
    not writable. Misses are decoded by `workers` processes (<= 0 or None: all cores but one).
    progress(done, total) follows every image. A file that cannot be decoded raises DatasetError.
    """
    total = len(records)
    paths = [os.fspath(r.path) for r in records]
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    if progress:
        progress(0, total)
    try:
        target = cache.dataset_path(paths)
        needed = total * cache.img_size**2 * np.dtype(CACHE_DTYPE).itemsize
        budget = memory_budget() if budget is None else budget
        if needed > budget:
            cache.warn(f"the preprocessed dataset ({_gigabytes(needed)}) is over the memory budget "
                       f"({_gigabytes(budget)}; set {MEMORY_BUDGET_ENV} to change it): images are streamed "
                       "from the on-disk cache each epoch instead of kept in memory")
            _fill(None, paths, cache, tick, workers)
            return StreamedImages(paths, cache)
        with _BuildLock(target):  # another process building the same file: wait, then map it
            mapped = _open_mapped(target) if target.is_file() else None
            if mapped is not None and mapped.shape == (total, cache.img_size, cache.img_size):
                with cache._lock:
                    cache.hits += total
                if progress:
                    progress(total, total)
                return mapped
            return _gather(paths, cache, target, tick, workers)
    except ImageReadError as error:
        raise DatasetError(f"Cannot load an image for training ({error.kind}): {error.message}. The file "
                           "changed since the dataset was checked; remove or replace it and run again.") from None
    except OSError as error:
        raise DatasetError(f"Cannot read an image for training: {error.filename}: {error.strerror}. "
                           "Check that the dataset did not move since it was checked.") from None
