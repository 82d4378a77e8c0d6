"""Tables of numbers: CSV/TSV files with a header, and ``.npz`` arrays.

CSV is read with Python's :mod:`csv` module (quoting, embedded delimiters)
and converted by numpy; every cell that is missing or not a number is
reported with its file, line and column. ``.npz`` archives are read with
``allow_pickle=False`` after every member's declared size has been checked
against the archive (an uncompressed member against the file, a compressed
one against what deflate can expand to), so a small hostile file cannot
make numpy allocate a huge array.
"""
from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["read_csv", "read_npz", "label_indices"]

# Cells that spell a missing value, as spreadsheets and pandas write them.
_MISSING = {"", "na", "n/a", "nan", "null", "none", "?", "-"}
# Deflate expands its input at most about 1032-fold.
_DEFLATE_MAX_RATIO = 1032
_NPZ_KEYS = ("X", "y", "X_test", "y_test", "X_validation", "y_validation")
# A .npy header is a short dict literal; numpy writes well under this.
_MAX_NPY_HEADER = 65536


def label_indices(values, where):
    """(int64 indices, class names) of labels given as strings or numbers:
    names sorted (numerically when every one is an integer)."""
    values = np.asarray(values)
    if values.dtype.kind in "US":
        names = np.unique(values.astype(str))
        try:
            order = sorted(names, key=lambda n: int(n))
        except ValueError:
            order = list(names)
        names = np.asarray(order)
        lookup = {name: i for i, name in enumerate(order)}
        indices = np.fromiter((lookup[v] for v in values.astype(str).tolist()), dtype=np.int64,
                              count=len(values))
        return indices, [str(n) for n in names]
    if values.dtype.kind in "iub":
        unique, indices = np.unique(values, return_inverse=True)
        return indices.astype(np.int64).reshape(-1), [str(v) for v in unique.tolist()]
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise ValueError(f"{where}: labels hold NaN or infinity")
        if not np.array_equal(values, np.round(values)):
            raise ValueError(f"{where}: labels are fractional numbers; a classifier needs "
                             f"class labels (integers or names)")
        unique, indices = np.unique(values.astype(np.int64), return_inverse=True)
        return indices.astype(np.int64).reshape(-1), [str(v) for v in unique.tolist()]
    raise ValueError(f"{where}: labels of dtype {values.dtype} are neither numbers nor names")


def map_labels(values, class_names, where):
    """int64 indices of labels into the training split's class names;
    a label never seen in training is a ValueError."""
    label_indices(values, where)  # the same checks as the training labels
    lookup = {name: i for i, name in enumerate(class_names)}
    text = np.asarray(values)
    if text.dtype.kind == "f":
        text = text.astype(np.int64)
    strings = [str(v) for v in text.tolist()]
    unknown = [i for i, name in enumerate(strings) if name not in lookup]
    if unknown:
        first = unknown[0]
        raise ValueError(f"{where}[{first}]: label {strings[first]!r} never occurs in the "
                         f"training data ({len(unknown)} such label"
                         f"{'s' if len(unknown) != 1 else ''}; its classes: "
                         f"{', '.join(class_names[:20])}{', ...' if len(class_names) > 20 else ''})")
    return np.fromiter((lookup[name] for name in strings), dtype=np.int64, count=len(strings))


# --- CSV ------------------------------------------------------------------


def delimiter_of(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def _first_bad_cell(rows, lines, columns, names, path):
    """The ValueError for the first cell of rows that is not a finite number."""
    for row, line in zip(rows, lines):
        for value, column in zip(row, columns):
            text = value.strip()
            if text.lower() in _MISSING:
                return ValueError(f"{path}, line {line}, column {names[column]!r}: missing "
                                  f"value ({value!r}); fill it in or drop the row")
            try:
                number = float(text)
            except ValueError:
                return ValueError(f"{path}, line {line}, column {names[column]!r}: {value!r} is "
                                  f"not a number; features must be numeric")
            if not math.isfinite(number):
                return ValueError(f"{path}, line {line}, column {names[column]!r}: {value!r} is "
                                  f"not a finite number")
    return None


def _header(path: Path, target):
    """(column names, the target's index) from the header row, checked."""
    delimiter = delimiter_of(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f, delimiter=delimiter, strict=True), None)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a CSV file: not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None
    except csv.Error as exc:
        raise ValueError(f"{path}, line 1: {exc}") from None
    if header is None or not any(h.strip() for h in header):
        raise ValueError(f"{path} is empty; a CSV file starts with a header row "
                         f"naming its columns")
    names = [h.strip() for h in header]
    if len(names) < 2:
        raise ValueError(f"{path}: the header names {len(names)} column "
                         f"({names[0]!r}); a data file needs features and a target "
                         f"column{', separated by tabs' if delimiter == chr(9) else ''}")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"{path}: the header names the column {duplicated[0]!r} twice")
    if target is None:
        return names, len(names) - 1
    if not isinstance(target, str):
        raise TypeError(f"target must be a column name, got {target!r}")
    if target not in names:
        raise ValueError(f"{path}: no column named {target!r}; the columns are "
                         f"{', '.join(names[:30])}{', ...' if len(names) > 30 else ''}")
    return names, names.index(target)


def _rows_have_width(path: Path, width: int) -> bool:
    """Whether every non-blank line after the header holds width cells, for a
    file without quotes (where each delimiter separates two cells); False
    when the file has quotes, or a line that does not, for the careful reader
    to say which."""
    data = np.fromfile(path, dtype=np.uint8)
    if (data == ord('"')).any():
        return False
    delimiter = ord(delimiter_of(path))
    ends = np.flatnonzero(data == ord("\n"))
    if len(ends) == 0 or ends[-1] != len(data) - 1:
        ends = np.append(ends, len(data))
    separators = np.flatnonzero(data == delimiter)
    counts = np.diff(np.searchsorted(separators, ends), prepend=0)
    lengths = np.diff(ends, prepend=-1) - 1
    # Blank lines ("" or a lone "\r") hold no cells and are skipped.
    blank = (lengths == 0) | ((lengths == 1) & (data[np.maximum(ends - 1, 0)] == ord("\r")))
    return bool(np.all((counts[1:] == width - 1) | blank[1:]))


def read_csv(path: Path, target=None):
    """(features float32 of shape (n, k), label strings (n,), feature names)
    of a CSV/TSV file with a header row.

    numpy's loadtxt reads well-formed files; the first sign of trouble (a
    ragged or quoted file, a cell that is not a number) hands the file to
    the csv module, row by row, which names the line and column."""
    names, target_column = _header(path, target)
    width = len(names)
    feature_columns = [c for c in range(width) if c != target_column]
    if _rows_have_width(path, width):
        import warnings

        options = dict(delimiter=delimiter_of(path), skiprows=1, comments=None,
                       encoding="utf-8-sig")
        try:
            with warnings.catch_warnings():
                # loadtxt notes that it skips blank lines: so does the csv module.
                warnings.simplefilter("ignore", UserWarning)
                features = np.loadtxt(path, usecols=feature_columns, ndmin=2, **options)
                labels = np.char.strip(np.loadtxt(path, usecols=[target_column], ndmin=1,
                                                  dtype=str, **options))
        except (ValueError, UnicodeDecodeError):
            pass  # the careful reader says where
        else:
            missing = np.isin(np.char.lower(labels), list(_MISSING - {"-"}))
            if len(labels) and np.isfinite(features).all() and not missing.any():
                return features.astype(np.float32), labels, [names[c] for c in feature_columns]
    return _read_csv_carefully(path, names, target_column)


def _data_rows(path: Path, columns_of=None):
    """(rows, line numbers) of a CSV/TSV file's data, through the csv module.

    ``columns_of(header)``, given the stripped header names, checks them and
    returns the columns each row keeps (None, or no callable: every column).
    Blank lines are skipped; a row of another width than the header's, text
    that is not UTF-8 and malformed CSV are ValueErrors naming the file and
    the line."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter_of(path), strict=True)
            header = [h.strip() for h in next(reader, [])]
            keep = None if columns_of is None else columns_of(header)
            rows, lines = [], []
            for row in reader:
                if not row:
                    continue  # a blank line
                if len(row) != len(header):
                    raise ValueError(f"{path}, line {reader.line_num}: {len(row)} values, but the "
                                     f"header names {len(header)} columns")
                rows.append(row if keep is None else [row[c] for c in keep])
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a CSV file: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise ValueError(f"{path}, line {reader.line_num}: {exc}") from None
    return rows, lines


def _read_csv_carefully(path: Path, names, target_column):
    """read_csv through the csv module: each row checked, each bad cell named."""
    width = len(names)
    rows, lines = _data_rows(path)
    if not rows:
        raise ValueError(f"{path} holds a header but no rows of data")
    feature_columns = [c for c in range(width) if c != target_column]
    table = np.array(rows, dtype=str)
    labels = np.char.strip(table[:, target_column])
    empty = np.flatnonzero(np.isin(np.char.lower(labels), list(_MISSING - {"-"})))
    if empty.size:
        raise ValueError(f"{path}, line {lines[empty[0]]}, column {names[target_column]!r}: "
                         f"missing label ({table[empty[0], target_column]!r})")
    try:
        features = table[:, feature_columns].astype(np.float64)
    except ValueError:
        features = None
    if features is None or not np.isfinite(features).all():
        bad_rows = range(len(rows)) if features is None else \
            np.flatnonzero(~np.isfinite(features).all(axis=1))
        error = _first_bad_cell(([rows[i][c] for c in feature_columns] for i in bad_rows),
                                (lines[i] for i in bad_rows), feature_columns, names, path)
        if error is None:  # numpy refused a spelling float() takes: say so all the same
            error = ValueError(f"{path}: a feature value is not a number")
        raise error
    return features.astype(np.float32), labels, [names[c] for c in feature_columns]


def read_csv_rows(path: Path, feature_names):
    """float32 features (n, k) of a CSV/TSV file whose header names at least
    feature_names (a target column, or others, may be there too), for
    ``mlp predict``."""
    def columns_of(header):
        missing = [n for n in feature_names if n not in header]
        if missing:
            raise ValueError(f"{path}: no column named {missing[0]!r}; the model takes the "
                             f"features {', '.join(feature_names[:30])}")
        return [header.index(n) for n in feature_names]

    rows, lines = _data_rows(path, columns_of)
    columns = range(len(feature_names))
    if not rows:
        raise ValueError(f"{path} holds no rows of data")
    error = _first_bad_cell(rows, lines, columns, list(feature_names), path)
    if error is not None:
        raise error
    return np.array(rows, dtype=str).astype(np.float64).astype(np.float32), lines


# --- npz ------------------------------------------------------------------


def _checked_member(archive, info, path, file_size):
    """The array in one member, after checking its declared size."""
    name = info.filename[:-4]
    if info.flag_bits & 0x1:
        raise ValueError(f"{path}: the array {name!r} is encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.compress_size != info.file_size or info.file_size > file_size:
            raise ValueError(f"{path}: the array {name!r} declares {info.file_size:,} bytes, "
                             f"more than the file's {file_size:,}")
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        if info.compress_size > file_size or \
                info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024:
            raise ValueError(f"{path}: the array {name!r} declares {info.file_size:,} bytes, "
                             f"more than its {info.compress_size:,} compressed bytes can hold")
    else:
        raise ValueError(f"{path}: the array {name!r} is compressed with a method numpy does "
                         f"not write")
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                stream, max_header_size=_MAX_NPY_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                stream, max_header_size=_MAX_NPY_HEADER)
        else:
            raise ValueError(f"{path}: the array {name!r} has .npy version {version}")
        if dtype.hasobject:
            raise ValueError(f"{path}: the array {name!r} holds Python objects; only numbers "
                             f"and strings are read (no pickle)")
        if dtype.kind not in "biufUS":
            raise ValueError(f"{path}: the array {name!r} has dtype {dtype}; expected numbers "
                             f"or strings")
        declared = math.prod(shape) * dtype.itemsize
        if declared > info.file_size:
            raise ValueError(f"{path}: the array {name!r} declares shape {shape} of {dtype}, "
                             f"{declared:,} bytes, but its member holds {info.file_size:,}")
    with archive.open(info) as stream:
        return np.lib.format.read_array(stream, allow_pickle=False)


def read_npz(path: Path):
    """{name: array} of an .npz file's X, y and optional X_test, y_test,
    X_validation, y_validation."""
    file_size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            infos = {info.filename[:-4]: info for info in archive.infolist()
                     if info.filename.endswith(".npy")}
            for needed in ("X", "y"):
                if needed not in infos:
                    raise ValueError(f"{path} holds no array {needed!r}; an .npz data file "
                                     f"holds X and y (and optionally X_test and y_test): "
                                     f"np.savez(path, X=X, y=y)")
            unknown = sorted(set(infos) - set(_NPZ_KEYS))
            if unknown:
                raise ValueError(f"{path}: unexpected array {unknown[0]!r}; an .npz data "
                                 f"file holds {', '.join(_NPZ_KEYS)}")
            total = sum(info.compress_size for info in infos.values())
            if total > file_size:
                raise ValueError(f"{path}: its arrays declare more bytes than the file holds")
            return {name: _checked_member(archive, info, path, file_size)
                    for name, info in infos.items()}
    except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from None
