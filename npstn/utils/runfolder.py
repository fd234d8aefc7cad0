"""Run folders owned by one process at a time, and the files npstn writes into them.

A training run holds its folder through an exclusive lock file,
``.npstn.lock``, created with ``O_CREAT | O_EXCL`` (atomic on POSIX, also on
NFS v3+) and holding the owner's pid, host and start time as JSON. It is
removed when the run ends, on an exception too. A second process that finds
the lock is refused with a message naming the owner; a lock left by a
process that no longer exists on this host (a SIGKILL, a power cut) is stale:
it is reported and taken over. A lock from another host cannot be checked
and is never taken over.

While it holds the lock, a run removes the temporary files that killed
atomic writes (:mod:`npstn.utils.io`) left behind: only names of the form
``.<file npstn writes>.<8 characters>.tmp``, nothing else.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import sys
import time
from pathlib import Path

__all__ = ["LOCK", "NPSTN_FILES", "RunFolderBusy", "RunFolderError", "lock_run", "clean_stale_temps",
           "npstn_files_in"]

LOCK = ".npstn.lock"

#: Every file (and folder) npstn writes into a run folder. A folder holding
#: any of them already holds a run (or a user's own file of that name), and
#: ``npstn train`` without ``--resume`` refuses to write there.
NPSTN_FILES = ("config.json", "model.npz", "log.csv", "checkpoint.npz", "metrics.json",
               "diverged.json", "eval.json", "viz", "boxes.png")

# tempfile.mkstemp(prefix=".<name>.", suffix=".tmp"): 8 characters from [a-z0-9_]
_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


class RunFolderError(ValueError):
    """A run folder (or a file in it) cannot be used as asked; the message says why and what to do."""


class RunFolderBusy(RunFolderError):
    """Another process holds the run folder's lock."""


def npstn_files_in(folder) -> list[str]:
    """The names of :data:`NPSTN_FILES` present in ``folder``."""
    folder = Path(folder)
    return [n for n in NPSTN_FILES if (folder / n).exists() or (folder / n).is_symlink()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _read_lock(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    started = info.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(
        started, (int, float)) else ""
    return f"process {info.get('pid', '?')} on {info.get('host', '?')}{when}"


def _acquire(folder: Path, quiet: bool) -> dict:
    path = folder / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = _read_lock(path)
            if info is None:  # removed meanwhile: try again
                continue
            pid = info.get("pid")
            same_host = info.get("host") == me["host"]
            if same_host and isinstance(pid, int) and pid != me["pid"] and not _pid_alive(pid):
                if not quiet:
                    print(f"npstn: {path} was left by {_describe(info)}, which no longer runs; "
                          "taking the run folder over", file=sys.stderr)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            if not info:
                raise RunFolderBusy(
                    f"{str(folder)!r} is locked by {path.name}, which is empty or unreadable (another "
                    f"npstn may be starting); if no npstn uses this folder, delete {str(path)!r}")
            raise RunFolderBusy(
                f"{str(folder)!r} is in use by {_describe(info)} (lock {path.name}); wait for it to "
                f"finish, or if that process is gone, delete {str(path)!r}")
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise RunFolderError(f"cannot write into run folder {str(folder)!r}: {exc.strerror}") from None
            raise
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me) + "\n")
        return me
    raise RunFolderBusy(f"could not take the lock {str(path)!r}; another npstn keeps creating it")


@contextlib.contextmanager
def lock_run(folder, *, quiet: bool = False):
    """Hold ``folder``'s lock for the block (creating the folder); released on any exit."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunFolderError(f"run folder {str(folder)!r} is a file, not a folder") from None
    except NotADirectoryError:
        raise RunFolderError(f"run folder {str(folder)!r} is inside a file, not a folder") from None
    except PermissionError as exc:
        raise RunFolderError(f"cannot create run folder {str(folder)!r}: {exc.strerror}") from None
    me = _acquire(folder, quiet)
    try:
        clean_stale_temps(folder)
        yield folder
    finally:
        info = _read_lock(folder / LOCK)
        if info and info.get("pid") == me["pid"] and info.get("host") == me["host"]:
            with contextlib.suppress(FileNotFoundError):
                (folder / LOCK).unlink()


def clean_stale_temps(folder) -> list[Path]:
    """Remove ``.<name>.XXXXXXXX.tmp`` files of npstn's own atomic writes; returns what was removed.

    Call only while holding the folder's lock (a live writer's temporary file
    would otherwise be removed under it). Looks in the folder and its
    ``viz/``; only temporary files of names npstn writes are touched.
    """
    folder = Path(folder)
    removed = []
    for d, names in ((folder, set(NPSTN_FILES) | {"summary.json"}), (folder / "viz", None)):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            m = _TEMP.match(p.name)
            if not m or not p.is_file() or p.is_symlink():
                continue
            name = m.group("name")
            if (names is not None and name not in names) or (names is None and not name.endswith(".png")):
                continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed
