"""Atomic writes: every imgprof writer writes to a temporary path next to the target and renames on success.

A writer that fails (an unstorable value, a full disk) or a process killed mid-write leaves the
user's existing file untouched: the target is only ever replaced by :func:`os.replace`, which is
atomic on POSIX and Windows when both paths are in the same folder. A zarr store (a folder) is
written to a temporary folder and swapped in atomically (Linux ``renameat2(RENAME_EXCHANGE)``);
elsewhere with two renames, the old store removed only after the new one is in place (a process
killed between the two renames leaves the old store under its temporary name,
``.~imgprof-<random>-<name>``, next to the target: nothing is lost).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TMP_MARKER", "atomic_path", "atomic_write_text"]

#: Temporary names start with this marker (``.~imgprof-<random>-<target name>``), so the suffix
#: (``.csv.gz``, ``.h5ad``, ``.zarr``) is kept and writers that pick a format from it still work.
TMP_MARKER = ".~imgprof-"


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{TMP_MARKER}{uuid.uuid4().hex[:8]}-{path.name}")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unavailable."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    ok = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    return ok  # on failure (e.g. a file system without RENAME_EXCHANGE) fall back to two renames


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only when the block succeeds.

    Parameters
    ----------
    path
        The final file (or folder, e.g. a ``.zarr`` store). Its parent folder must exist.

    Returns
    -------
    A context manager yielding the temporary :class:`~pathlib.Path` to write to. It ends with the
    target's name, so extension-based format choices (``.csv.gz`` compression) still apply. On an
    exception the temporary path is removed and the target is left as it was.

    Examples
    --------
    >>> import os, tempfile
    >>> from imgprof.io._atomic import atomic_path
    >>> target = os.path.join(tempfile.mkdtemp(), "table.csv")
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("a,b\\n1,2\\n")
    >>> open(target).read()
    'a,b\\n1,2\\n'
    """
    path = Path(path)
    parent = path.parent
    if not parent.exists():
        raise FileNotFoundError(f"{path}: the output folder {parent} does not exist.")
    if path.is_dir() and not path.name.lower().endswith(".zarr"):
        raise IsADirectoryError(f"{path}: is a folder; give a file name to write to (nothing was written).")
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{path}: the writer produced no output.")
        if tmp.is_dir():
            # A folder cannot be os.replace'd onto a non-empty folder. On Linux, swap the two in one
            # atomic step (renameat2 RENAME_EXCHANGE); elsewhere move the old one aside first.
            if path.is_dir() and not path.is_symlink() and _exchange(tmp, path):
                _remove(tmp)  # now holds the old store
                return
            old = None
            if path.exists() or path.is_symlink():
                old = _tmp_sibling(path)
                os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                if old is not None:
                    os.replace(old, path)
                raise
            if old is not None:
                _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    path
        Output file.
    text
        Content.
    encoding
        Text encoding.

    Returns
    -------
    The written :class:`~pathlib.Path`.

    Examples
    --------
    >>> import os, tempfile
    >>> from imgprof.io._atomic import atomic_write_text
    >>> p = atomic_write_text(os.path.join(tempfile.mkdtemp(), "run.json"), "{}")
    >>> p.read_text()
    '{}'
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding=encoding) as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return path
