"""Reading delimited text tables safely: every failure names the file (and the line where known).

Shared by :func:`imgprof.io.read_profiles`, :func:`imgprof.io.read_cellprofiler` (CSV folders),
:func:`imgprof.io.read_cytotable` and :func:`imgprof.io.read_gct`. Third-party exceptions
(pandas ``ParserError``/``EmptyDataError``, ``UnicodeDecodeError``, gzip ``EOFError``/``BadGzipFile``,
``zlib.error``) become :class:`ReadError`, a ``ValueError`` that names the file.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import pandas as pd

from .._core.docs import doc_params
from .._core.features import check_unique_columns

__all__ = ["ReadError", "check_field_counts", "check_last_row", "open_text", "read_text_table", "sniff_sep", "wrap_errors"]

_MAGIC = {
    b"PK\x03\x04": "a ZIP archive (an Excel .xlsx workbook?), not a text table; save it as CSV, or read it with "
                   "pandas.read_excel and pass the DataFrame to ip.io.from_pandas",
    b"PAR1": "a parquet file, not a text table; give it a .parquet extension",
    b"\x89HDF": "an HDF5 file (h5ad/GCTX?), not a text table; give it its proper extension (.h5ad, .gctx)",
    b"SQLite format 3": "an SQLite database, not a text table; give it a .sqlite extension (ip.io.read_cellprofiler)",
}


class ReadError(ValueError):
    """An input file that cannot be read as asked; the message names the file (and line where known).

    Parameters
    ----------
    message
        What went wrong, starting with the file name.
    path
        The file at fault.
    line
        1-based line number, when known.

    Returns
    -------
    The exception (a :class:`ValueError`, so ``except ValueError`` still catches it).

    Examples
    --------
    >>> from imgprof.io import ReadError
    >>> err = ReadError("plate.csv: line 3 has 2 of 5 fields", path="plate.csv", line=3)
    >>> isinstance(err, ValueError), err.line
    (True, 3)
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, line: int | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.line = line


def _is_gzip_name(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _head_bytes(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _check_magic(path: Path, label: str) -> bool:
    """Raise for binary files read as text; return whether the content is gzip-compressed."""
    head = _head_bytes(path)
    gz = head.startswith(b"\x1f\x8b")
    if _is_gzip_name(path) and not gz:
        raise ReadError(f"{label}: the name ends in .gz but the file is not gzip-compressed.", path=label)
    if not gz:
        for magic, what in _MAGIC.items():
            if head.startswith(magic):
                raise ReadError(f"{label}: this is {what}.", path=label)
    return gz


def _decode_hint(path: Path, gz: bool, encoding: str, label: str) -> ReadError:
    """A ReadError naming the first line that is not valid ``encoding`` text."""
    opener = gzip.open if gz else open
    line_no, bad = None, b""
    try:
        with opener(path, "rb") as fh:
            for i, raw in enumerate(fh, start=1):
                try:
                    raw.decode(encoding)
                except UnicodeDecodeError as e:
                    line_no, bad = i, raw[max(e.start - 10, 0): e.end + 10]
                    break
    except (OSError, EOFError, zlib.error):
        pass
    where = f", line {line_no}" if line_no else ""
    snippet = f" near {bad!r}" if bad else ""
    return ReadError(
        f"{label}{where}: not valid {encoding} text{snippet}. If the file is Latin-1/Windows text, re-save it as "
        f"UTF-8 or pass encoding='latin-1'.",
        path=label, line=line_no,
    )


def open_text(path: Path, *, encoding: str = "utf-8", gz: bool | None = None) -> IO[str]:
    """Open a (possibly gzip-compressed) text file for reading.

    Parameters
    ----------
    path
        The file.
    encoding
        Text encoding.
    gz
        Whether the content is gzip-compressed (default: from the ``.gz`` name).

    Returns
    -------
    A text file object (``newline=""`` so the csv module sees raw line ends).

    Examples
    --------
    >>> import os, tempfile
    >>> from pathlib import Path
    >>> from imgprof.io._text import open_text
    >>> p = Path(tempfile.mkdtemp()) / "t.csv"; _ = p.write_text("a,b\\n")
    >>> with open_text(p) as fh:
    ...     fh.readline()
    'a,b\\n'
    """
    gz = _is_gzip_name(path) if gz is None else gz
    if gz:
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


class wrap_errors:
    """Context manager turning third-party read errors into :class:`ReadError` naming the file.

    Parameters
    ----------
    path
        The file being read.
    label
        Name used in messages (default ``str(path)``).
    encoding
        The encoding in use (for the decode hint).
    gz
        Whether the file is gzip-compressed.

    Returns
    -------
    The context manager.

    Examples
    --------
    >>> import pandas as pd
    >>> from imgprof.io._text import wrap_errors, ReadError
    >>> try:
    ...     with wrap_errors("x.csv"):
    ...         raise pd.errors.EmptyDataError("No columns to parse from file")
    ... except ReadError as e:
    ...     print(e)
    x.csv: no columns to parse (the file holds no table).
    """

    def __init__(self, path, label: str | None = None, *, encoding: str = "utf-8", gz: bool | None = None):
        self.path = Path(path)
        self.label = label or str(path)
        self.encoding = encoding
        self.gz = _is_gzip_name(self.path) if gz is None else gz

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is None or isinstance(exc, ReadError):
            return False
        label = self.label
        if isinstance(exc, UnicodeDecodeError):
            raise _decode_hint(self.path, self.gz, self.encoding, label) from exc
        if isinstance(exc, (EOFError, gzip.BadGzipFile, zlib.error)):
            raise ReadError(
                f"{label}: the compressed file is truncated or corrupt ({type(exc).__name__}: {exc}); "
                "copy or download it again.", path=label,
            ) from exc
        if isinstance(exc, pd.errors.EmptyDataError):
            raise ReadError(f"{label}: no columns to parse (the file holds no table).", path=label) from exc
        if isinstance(exc, pd.errors.ParserError):
            import re

            m = re.search(r"line (\d+)", str(exc))
            line = int(m.group(1)) if m else None
            msg = str(exc).replace("Error tokenizing data. C error: ", "")
            raise ReadError(
                f"{label}{f', line {line}' if line else ''}: malformed table ({msg.strip()}). "
                "Check the separator, quoting and the number of fields on that line.",
                path=label, line=line,
            ) from exc
        return False


def sniff_sep(header_line: str, default: str) -> str:
    """The column separator of a header line: ``default`` unless the line holds none of it but another.

    As pycytominer's ``infer_delim`` does, a tab-separated file named ``.csv`` (or a comma-separated
    ``.tsv``) is read with the separator it actually uses.

    Parameters
    ----------
    header_line
        The first line of the file.
    default
        The separator implied by the extension.

    Returns
    -------
    The separator to use.

    Examples
    --------
    >>> from imgprof.io._text import sniff_sep
    >>> sniff_sep("Metadata_Well\\tCells_Area\\n", ",")
    '\\t'
    >>> sniff_sep("Metadata_Well,Cells_Area\\n", ",")
    ','
    """
    if default in header_line:
        return default
    counts = {s: header_line.count(s) for s in (",", "\t", ";", "|") if s != default}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] > 0 else default


#: Shared docstring text of the file checks.
_CHECK_DOC = {
    "label": "label\n    Name used in messages.",
    "returns_none": "Returns\n-------\nNone.\n\nExamples\n--------\n>>> import tempfile\n>>> from pathlib import Path",
}


def _tail_line(path: Path, encoding: str) -> tuple[str, bool]:
    """Last non-empty line of a plain file and whether the file ends with a newline."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        block = 1 << 16
        fh.seek(max(size - block, 0))
        tail = fh.read()
    ends_nl = tail.endswith((b"\n", b"\r"))
    stripped = tail.rstrip(b"\r\n")
    last = stripped.rsplit(b"\n", 1)[-1]
    return last.decode(encoding, errors="replace"), ends_nl


@doc_params(**_CHECK_DOC)
def check_last_row(path: Path, sep: str, n_fields: int, label: str, *, encoding: str = "utf-8", n_lines: int | None = None,
                   frame: pd.DataFrame | None = None) -> None:
    """Raise when the last line of a plain text table has fewer fields than the header: a cut-off file.

    Parameters
    ----------
    path
        A plain (not compressed) text table.
    sep
        Column separator.
    n_fields
        Number of fields every row must have.
    {label}
    encoding
        Text encoding.
    n_lines
        Line number of the last row, when known (for the message).
    frame
        The parsed table, when available: a last row whose missing fields pandas did *not*
        fill with NaN is complete (e.g. a quoted value spanning lines), so nothing is raised.

    {returns_none}
    >>> from imgprof.io._text import check_last_row
    >>> p = Path(tempfile.mkdtemp()) / "t.csv"; _ = p.write_text("a,b,c\\n1,2,3\\n4,5")
    >>> check_last_row(p, ",", 3, "t.csv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    imgprof.io._text.ReadError: t.csv: the last row has 2 of 3 fields and the file does not end with a newline: ...
    """
    if n_fields <= 1:
        return
    last, ends_nl = _tail_line(path, encoding)
    if not last.strip():
        return
    fields = next(csv.reader(io.StringIO(last), delimiter=sep), [])
    if (len(fields) < n_fields and frame is not None and len(frame) and frame.shape[1] >= n_fields
            and pd.notna(frame.iloc[-1, len(fields):n_fields]).any()):
        return  # the last record is complete: its last physical line is part of a quoted value
    if len(fields) < n_fields:
        where = f", line {n_lines}" if n_lines else ""
        why = " and the file does not end with a newline" if not ends_nl else ""
        raise ReadError(
            f"{label}{where}: the last row has {len(fields)} of {n_fields} fields{why}: the file looks truncated "
            "(cut off during a copy or download?).",
            path=label, line=n_lines,
        )


_CHUNK = 1 << 26  # 64 MiB of raw text per step of the field-count check


@doc_params(**_CHECK_DOC)
def check_field_counts(path: Path, sep: str, n_fields: int, label: str, *, gz: bool = False, n_header_lines: int = 1) -> None:
    """Raise when any row of a delimited text file has fewer fields than the header.

    pandas fills missing trailing fields with NaN without a word, so a row cut short (a file
    truncated in the middle of its last row, or a damaged line) would be read as missing values.
    Rows with *more* fields are reported by pandas itself. Files holding a quote character are
    skipped (a quoted value may hold separators or newlines); blank lines are ignored, as pandas
    ignores them. The scan is vectorised and runs over 64 MiB blocks.

    Parameters
    ----------
    path
        The text file.
    sep
        Single-character column separator.
    n_fields
        Number of fields the header declares.
    {label}
    gz
        Whether the file is gzip-compressed.
    n_header_lines
        Lines before the first data row (not checked).

    {returns_none}
    >>> from imgprof.io._text import check_field_counts
    >>> p = Path(tempfile.mkdtemp()) / "t.csv"; _ = p.write_text("a,b,c\\n1,2\\n4,5,6\\n")
    >>> check_field_counts(p, ",", 3, "t.csv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    imgprof.io._text.ReadError: t.csv, line 2: 2 fields where the header has 3; the row is cut short ...
    """
    import numpy as np

    if n_fields <= 1 or len(sep) != 1:
        return
    opener = gzip.open if gz else open
    sep_b, line_no, carry = ord(sep), 0, b""
    last_bad: tuple[int, int] | None = None
    with opener(path, "rb") as fh:
        while True:
            block = fh.read(_CHUNK)
            data = carry + block
            if not block:
                if not data:
                    break
                cut = len(data)  # the last line, without a final newline
            else:
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    carry = data
                    continue
            chunk, carry = data[:cut], data[cut:]
            if b'"' in chunk:
                return
            arr = np.frombuffer(chunk, dtype=np.uint8)
            nl = np.flatnonzero(arr == 10)
            ends = np.r_[nl, len(arr)] if (len(arr) and arr[-1] != 10) else nl
            starts = np.r_[0, ends[:-1] + 1]
            counts = np.bincount(np.searchsorted(ends, np.flatnonzero(arr == sep_b)), minlength=len(ends))[: len(ends)]
            lengths = ends - starts
            has_cr = (lengths > 0) & (arr[np.minimum(ends - 1, len(arr) - 1)] == 13)
            blank = (lengths - has_cr) == 0
            numbers = line_no + 1 + np.arange(len(ends))
            bad = (~blank) & (counts < n_fields - 1) & (numbers > n_header_lines)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                last_bad = (int(numbers[i]), int(counts[i]) + 1)
                break
            line_no += len(ends)
            if not block:
                break
    if last_bad is not None:
        line, got = last_bad
        raise ReadError(
            f"{label}, line {line}: {got} fields where the header has {n_fields}; the row is cut short "
            "(a damaged or truncated file?).", path=label, line=line,
        )


@doc_params(**_CHECK_DOC)
def check_file(path: Path, label: str | os.PathLike, what: str) -> None:
    """Raise when ``path`` is missing, a folder or empty (0 bytes); messages start with ``label``.

    Parameters
    ----------
    path
        The file to read.
    label
        Name used in messages (and as the error's ``path``).
    what
        What the file should be, for the folder message (``"table file"``, ``"GCT file"``).

    {returns_none}
    >>> from imgprof.io._text import check_file
    >>> check_file(Path(tempfile.mkdtemp()), "plate", "table file")
    Traceback (most recent call last):
    ...
    imgprof.io._text.ReadError: plate: is a folder, not a table file.
    """
    if not path.exists():
        raise FileNotFoundError(f"{label}: no such file.")
    if path.is_dir():
        raise ReadError(f"{label}: is a folder, not a {what}.", path=label)
    if path.stat().st_size == 0:
        raise ReadError(f"{label}: the file is empty (0 bytes).", path=label)


def read_text_table(
    path: str | os.PathLike,
    *,
    sep: str | None = None,
    label: str | None = None,
    encoding: str = "utf-8",
    default_sep: str = ",",
    check_unique: bool = True,
    **read_csv_kwargs,
) -> pd.DataFrame:
    """Read a CSV/TSV table (optionally ``.gz``) with checks that name the file on any failure.

    Checks: empty file; binary content with a text name (xlsx, parquet, HDF5, SQLite); encoding
    (names the first undecodable line); the separator (sniffed from the header, as pycytominer
    does, when ``sep`` is None); duplicated column names (refused up front); malformed rows
    (pandas ``ParserError`` with its line); a truncated last row or a cut-off ``.gz`` stream.

    Parameters
    ----------
    path
        ``.csv``, ``.tsv``, ``.txt``, optionally ``.gz``-compressed.
    sep
        Column separator; None = from the extension, corrected by sniffing the header.
    label
        Name used in messages (default the path).
    encoding
        Text encoding.
    default_sep
        Separator for names that imply none.
    check_unique
        Refuse duplicated column names.
    **read_csv_kwargs
        Passed to :func:`pandas.read_csv`.

    Returns
    -------
    The table as a DataFrame.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from imgprof.io._text import read_text_table
    >>> p = Path(tempfile.mkdtemp()) / "t.csv"; _ = p.write_text("a\\tb\\n1\\t2\\n")
    >>> read_text_table(p).columns.tolist()
    ['a', 'b']
    """
    path = Path(path)
    label = label or str(path)
    check_file(path, label, "table file")
    gz = _check_magic(path, label)
    with wrap_errors(path, label, encoding=encoding, gz=gz):
        with open_text(path, encoding=encoding, gz=gz) as fh:
            line = fh.readline()
        if not line.strip():
            raise ReadError(f"{label}: the file is empty (no header line).", path=label, line=1)
        if sep is None:
            name = path.name.lower().removesuffix(".gz")
            ext_sep = "\t" if name.endswith((".tsv", ".txt", ".tab")) else (default_sep if not name.endswith(".csv") else ",")
            sep = sniff_sep(line, ext_sep)
        header = next(csv.reader([line.rstrip("\r\n")], delimiter=sep))
        if check_unique:
            check_unique_columns(header, source=label)
        read_csv_kwargs.setdefault("low_memory", False)
        df = pd.read_csv(path, sep=sep, encoding=encoding, compression="gzip" if gz else None, **read_csv_kwargs)
    if not gz:
        check_last_row(path, sep, len(header), label, encoding=encoding, n_lines=len(df) + 1, frame=df)
    if not (set(read_csv_kwargs) & {"skiprows", "comment", "nrows", "header", "names", "skipfooter"}):
        with wrap_errors(path, label, encoding=encoding, gz=gz):
            check_field_counts(path, sep, len(header), label, gz=gz)
    return df


def check_columns_unique(columns: Sequence[str], label: str) -> None:
    """Refuse duplicated column names (see :func:`imgprof._core.features.check_unique_columns`)."""
    check_unique_columns([str(c) for c in columns], source=label)
