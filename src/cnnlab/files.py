"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Every file cnnlab writes goes to a temporary name in the same folder first and is
then renamed over the target, which is atomic on POSIX and Windows filesystems.
"""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import CnnlabError, resume_call

TEMP_PREFIX = ".cnnlab-tmp-"  # what a crash can leave behind: never a target name, removed by remove_temporaries
LOCK_NAME = ".cnnlab-lock"
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make results unreadable to other users
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a temporary folder beside `path`; put it in place of `path` (a folder, replaced whole) if the block
    succeeds. The swap is two renames: a crash between them leaves the old folder under a temporary name, never a
    half-written one under `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent))
    old = tmp.with_name(tmp.name + ".old")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        for leftover in (tmp, old):
            shutil.rmtree(leftover, ignore_errors=True)


def _fsync_folder(folder):
    """Make a rename survive a power cut, not only a crash (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unwritable(folder, error: OSError, flag="out=") -> CnnlabError:
    return CnnlabError(f"cannot write to {folder}: {error.strerror or error}; choose another {flag} folder")


@contextlib.contextmanager
def exclusive(folder):
    """Hold a lock on `folder` while the block runs, so that two cnnlab processes never train into one run directory
    (their checkpoints would interleave). The OS drops the lock when the process ends, even on kill -9. Where Python
    has no flock (Windows), the block runs unguarded."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_NAME, "a")
    except OSError as e:
        raise unwritable(folder, e) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CnnlabError(f"{folder} is in use by another cnnlab process; wait for it to finish, or stop it "
                              f"(Ctrl-C) and resume with: {resume_call(folder)}") from None
        yield


def remove_temporaries(folder):
    """Delete what writes interrupted by a kill left in `folder` (the targets themselves are intact)."""
    for leftover in Path(folder).glob(TEMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def write_bytes(path, data: bytes):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str):
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_model(model, path):
    """Save a Keras model atomically (Keras picks the format from the suffix, so keep it)."""
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        model.save(tmp)


def copy_file(source, path):
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        shutil.copyfile(source, tmp)


FIGURE_DPI = 100  # figures as files and in the report


def save_figure(fig, path):
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=FIGURE_DPI, bbox_inches="tight")


def check_writable(folder, need_bytes=0, flag="out="):
    """Fail before the work (a training, a report's figures), not after it, when the output folder (given by `flag`)
    is unwritable or full."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=TEMP_PREFIX + "write-check.") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
        free = shutil.disk_usage(folder).free
    except OSError as e:
        raise unwritable(folder, e, flag) from None
    if free < need_bytes:
        raise CnnlabError(
            f"only {free / 1e6:.1f} MB free in {folder}, {need_bytes / 1e6:.1f} MB needed; free space or choose another {flag} folder"
        )
    return folder
