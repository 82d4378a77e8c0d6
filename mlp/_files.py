"""mlp's own files: atomic writes, and a reader for .npz archives that trusts no size.

Model files and the MNIST cache are .npz archives written by ``np.savez``: a zip of
uncompressed ``.npy`` members. ``np.load`` would allocate every array from the shape in
its ``.npy`` header before reading a byte of it, so a damaged or hostile 300-byte file
can ask for terabytes. :class:`NpzReader` checks every size the archive declares against
the bytes really in the file before it allocates anything, and reads only plain numeric
arrays: no pickle, no compressed member (whose size cannot be known before inflating it),
no object dtype. Every way a file can be wrong is a ``ValueError``.
"""
from __future__ import annotations

import io
import mmap
import os
import re
import secrets
import struct
import sys
import zipfile
import zlib

import numpy as np

# A .npy header is a short Python dict literal padded to 64 bytes; np.savez writes
# about 128 bytes for a 2-D array. Anything much longer is not one of ours.
_MAX_NPY_HEADER = 4096
_NPY_MAGIC = b"\x93NUMPY"
# Exactly the header numpy writes: sorted keys, repr() of each value.
_NPY_HEADER = re.compile(
    r"\{'descr': '(?P<descr>[<>|][biuf][1248])', 'fortran_order': (?P<fortran>True|False), "
    r"'shape': \((?P<shape>(?:[0-9]{1,18}, )*(?:[0-9]{1,18},?)?)\), \} *\n")
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
# Exceptions the zipfile module raises on a damaged archive, besides BadZipFile.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError,
               struct.error, NotImplementedError, IndexError, KeyError, OverflowError)


class NpzReader:
    """Read the members of an uncompressed .npz archive, checking every size first.

    Parameters
    ----------
    path : str
        The archive. It is opened at once and closed by :meth:`close` (or the
        ``with`` statement).

    Only the zip directory is read on opening. :meth:`header` then reads one
    member's ``.npy`` header (a few hundred bytes) and :meth:`read` its data, into
    an array whose size has already been matched against the member's size in the
    directory, which in turn has been matched against the file's length.

    Raises ``ValueError`` for anything but a well-formed archive of plain numeric
    arrays; ``OSError`` only when the file cannot be opened or read.
    """

    def __init__(self, path):
        self._file = open(path, "rb")
        try:
            self._file_size = os.fstat(self._file.fileno()).st_size
            self._members = self._read_directory()
        except BaseException:
            self._file.close()
            raise
        self._headers = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        self._file.close()

    @property
    def names(self):
        """The members' names without ``.npy``, in archive order."""
        return list(self._members)

    def _read_directory(self):
        try:
            with zipfile.ZipFile(self._file) as archive:
                infos = archive.infolist()
        except _ZIP_ERRORS as exc:
            raise ValueError(f"not a zip archive ({type(exc).__name__}: {exc})") from None
        members = {}
        total = 0
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise ValueError(f"member {info.filename!r} is not a .npy array")
            name = info.filename[:-4]
            if name in members:
                raise ValueError(f"member {info.filename!r} appears twice")
            if info.flag_bits & 0x1:
                raise ValueError(f"member {info.filename!r} is encrypted")
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise ValueError(f"member {info.filename!r} is compressed; expected the "
                                 "uncompressed members np.savez writes")
            # Members may not overlap, so together they fit in the file.
            total += info.file_size
            end = info.header_offset + _LOCAL_HEADER.size + info.file_size
            if info.header_offset < 0 or total > self._file_size or end > self._file_size:
                raise ValueError(f"member {info.filename!r} declares {info.file_size} bytes, "
                                 f"more than the file's {self._file_size}")
            members[name] = info
        return members

    def _member(self, name):
        try:
            return self._members[name]
        except KeyError:
            raise ValueError(f"array {name!r} is missing") from None

    def _data_start(self, info):
        """Offset of a member's first byte, from its local header."""
        self._file.seek(info.header_offset)
        local = self._file.read(_LOCAL_HEADER.size)
        if len(local) != _LOCAL_HEADER.size:
            raise ValueError(f"member {info.filename!r}: truncated local header")
        fields = _LOCAL_HEADER.unpack(local)
        signature, name_length, extra_length = fields[0], fields[-2], fields[-1]
        if signature != _LOCAL_SIGNATURE:
            raise ValueError(f"member {info.filename!r}: bad local header")
        start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        if start + info.file_size > self._file_size:
            raise ValueError(f"member {info.filename!r} runs past the end of the file")
        return start

    def header(self, name):
        """``(shape, dtype)`` of member `name`, after checking that the member holds
        exactly ``prod(shape) * dtype.itemsize`` bytes of data."""
        if name in self._headers:
            return self._headers[name][:2]
        info = self._member(name)
        start = self._data_start(info)
        self._file.seek(start)
        prefix = self._file.read(min(info.file_size, len(_NPY_MAGIC) + 6 + _MAX_NPY_HEADER))
        if len(prefix) < len(_NPY_MAGIC) + 4 or not prefix.startswith(_NPY_MAGIC):
            raise ValueError(f"array {name!r} is not in .npy format")
        major = prefix[len(_NPY_MAGIC)]
        if major == 1:
            length_end = len(_NPY_MAGIC) + 4
            length = struct.unpack("<H", prefix[len(_NPY_MAGIC) + 2:length_end])[0]
        elif major in (2, 3):
            length_end = len(_NPY_MAGIC) + 6
            if len(prefix) < length_end:
                raise ValueError(f"array {name!r}: truncated .npy header")
            length = struct.unpack("<I", prefix[len(_NPY_MAGIC) + 2:length_end])[0]
        else:
            raise ValueError(f"array {name!r}: unknown .npy version {major}")
        if length > _MAX_NPY_HEADER or length_end + length > len(prefix):
            raise ValueError(f"array {name!r}: .npy header of {length} bytes is truncated "
                             "or too long")
        text = prefix[length_end:length_end + length].decode("latin1")
        match = _NPY_HEADER.fullmatch(text)
        if match is None:
            raise ValueError(f"array {name!r}: unreadable .npy header {text[:80]!r}")
        if match["fortran"] == "True":
            raise ValueError(f"array {name!r} is in Fortran order; expected C order")
        dtype = np.dtype(match["descr"])
        shape = tuple(int(d) for d in match["shape"].replace(",", " ").split())
        data_bytes = dtype.itemsize
        for extent in shape:
            data_bytes *= extent
        header_bytes = length_end + length
        if header_bytes + data_bytes != info.file_size:
            raise ValueError(f"array {name!r}: its header declares shape {shape} of {dtype}, "
                             f"{data_bytes} bytes, but the member holds "
                             f"{info.file_size - header_bytes}")
        self._headers[name] = (shape, dtype, start, prefix[:header_bytes])
        return shape, dtype

    def read(self, name, out=None):
        """Member `name` as a new array, or into `out` (a C-contiguous array of the
        member's shape and dtype). The zip CRC is checked."""
        shape, dtype = self.header(name)
        _, _, start, header_bytes = self._headers[name]
        if out is None:
            out = np.empty(shape, dtype=dtype)
        elif out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
            raise ValueError(f"array {name!r} is {shape} {dtype}, cannot read it into "
                             f"{out.shape} {out.dtype}")
        view = memoryview(out).cast("B") if out.size else memoryview(b"")
        self._file.seek(start + len(header_bytes))
        got = self._file.readinto(view) if len(view) else 0
        if got != len(view):
            raise ValueError(f"array {name!r} is truncated")
        info = self._members[name]
        if zlib.crc32(view, zlib.crc32(header_bytes)) != info.CRC:
            raise ValueError(f"array {name!r} is damaged (its CRC does not match)")
        return out


    def read_mapped(self, name):
        """Member `name` as an array mapped from the file, copy-on-write.

        Its pages are the operating system's cached pages of the file, shared
        with every process that maps it: no memory is allocated or filled
        until the array is written to, where a write changes only this
        process's copy, never the file. Reading the whole array back costs a
        tenth of :meth:`read`'s copy into new memory, whose pages the
        operating system must first zero (0.03 s against 0.1-0.3 s for 188 MB
        here). The sizes are checked as for :meth:`read`; the CRC is not, as
        that would read every byte. A member whose data does not start on a
        64-byte boundary of the file (:func:`write_npz_aligned` puts them
        there) is read as :meth:`read` does.
        """
        shape, dtype = self.header(name)
        _, _, start, header_bytes = self._headers[name]
        data_start = start + len(header_bytes)
        nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        if nbytes == 0 or data_start % _ALIGNMENT:
            # An archive not written by write_npz_aligned: the kernels take
            # only aligned arrays, so this member is read into new memory.
            return self.read(name)
        # mmap's offset must be a multiple of its granularity: map from the
        # boundary below and start the array that far into the mapping.
        aligned = data_start // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
        mapping = mmap.mmap(self._file.fileno(), data_start - aligned + nbytes,
                            access=mmap.ACCESS_COPY, offset=aligned)
        # The array keeps the mapping alive; closing the file does not unmap it.
        return np.frombuffer(mapping, dtype=dtype, count=nbytes // dtype.itemsize,
                             offset=data_start - aligned).reshape(shape)


# Where write_npz_aligned starts each member's data: a cache line, and a
# multiple of every dtype's alignment.
_ALIGNMENT = 64
# An extra field's ID for padding, as Android's zipalign uses; readers skip
# extra fields they do not know.
_PADDING_EXTRA_ID = 0xD935


def write_npz_aligned(fh, arrays):
    """Write arrays (name -> C-contiguous ndarray) to the binary file fh as an
    uncompressed .npz archive, as ``np.savez`` would, but with each member's
    data starting on a 64-byte boundary of the file, so that
    :meth:`NpzReader.read_mapped` maps it as an aligned array. np.savez puts
    members where they fall; a float32 array mapped from an odd offset is
    misaligned, which the kernels do not take (x86 forgives it, undefined
    behaviour in C and a fault on some CPUs). The padding is an extra field
    in each member's local header; .npy headers are a multiple of 64 bytes
    long already."""
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, np.lib.format.header_data_from_array_1_0(array))
            header = header.getvalue()
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = len(header) + array.nbytes
            # zipfile adds a 20-byte zip64 field after ours to a member this large.
            zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT
            fixed = (_LOCAL_HEADER.size + len(info.filename.encode("utf-8")) + 4
                     + (20 if zip64 else 0))
            pad = (-(fh.tell() + fixed)) % _ALIGNMENT
            info.extra = struct.pack("<HH", _PADDING_EXTRA_ID, pad) + bytes(pad)
            with archive.open(info, "w", force_zip64=zip64) as member:
                member.write(header)
                if array.nbytes:
                    member.write(memoryview(array).cast("B"))


def atomic_write(path, write):
    """Write a file through ``write(binary_file)`` and rename it over `path`.

    Readers (or a concurrent process) never see a half-written file, and a failure
    leaves whatever stood at `path` untouched and no temporary file behind. The file
    gets the permissions the umask gives any new file: the temporary file is created
    with mode 0o666 and the operating system applies the umask, as for ``open()``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"could not create a temporary file next to {path}")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _sync_directory(directory)


def _sync_directory(directory):
    # The rename is durable only once the directory itself is on disk.
    if sys.platform == "win32":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
