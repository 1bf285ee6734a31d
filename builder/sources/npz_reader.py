"""Read single items of arrays inside an ``.npz`` without loading whole arrays.

An ``.npz`` is a zip of ``.npy`` members. A stored (uncompressed) member is memory-mapped; a deflated
one is streamed forward, one item at a time, and reopened only when asked to go backwards, so reading a
split in order costs one pass and one item of memory.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format


@dataclass
class _Member:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    data_offset: int  # within the member's uncompressed bytes


class NpyMemberReader:
    """Item ``i`` (along axis 0) of one array in an npz file."""

    def __init__(self, path: Path, key: str):
        self.path = Path(path)
        self.key = key
        self._zip = zipfile.ZipFile(self.path)
        name = key if key.endswith(".npy") else f"{key}.npy"
        try:
            self._info = self._zip.getinfo(name)
        except KeyError:
            self._zip.close()
            raise KeyError(f"{self.path}: no array '{key}' (has {self.keys_in(self.path)})") from None
        self._stream: IO[bytes] | None = None
        self._next = 0
        self.member = self._read_header()
        self._memmap = self._map() if self._info.compress_type == zipfile.ZIP_STORED else None

    @staticmethod
    def keys_in(path: Path) -> list[str]:
        with zipfile.ZipFile(path) as z:
            return [n[:-4] for n in z.namelist() if n.endswith(".npy")]

    def _read_header(self) -> _Member:
        with self._zip.open(self._info) as f:
            version = npy_format.read_magic(f)
            header_readers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
            if version not in header_readers:
                raise ValueError(f"{self.path}:{self.key}: unsupported .npy format version {version}")
            shape, fortran, dtype = header_readers[version](f)
            offset = f.tell()
        if dtype.hasobject:
            raise ValueError(f"{self.path}:{self.key}: object arrays are not supported")
        if fortran and len(shape) > 1:
            raise ValueError(f"{self.path}:{self.key}: Fortran-ordered arrays are not supported")
        return _Member(tuple(shape), dtype, fortran, offset)

    def _map(self) -> np.ndarray:
        with open(self.path, "rb") as raw:
            raw.seek(self._info.header_offset)
            local = raw.read(30)
            name_len = int.from_bytes(local[26:28], "little")
            extra_len = int.from_bytes(local[28:30], "little")
        start = self._info.header_offset + 30 + name_len + extra_len + self.member.data_offset
        return np.memmap(self.path, dtype=self.member.dtype, mode="r", offset=start, shape=self.member.shape)

    def __len__(self) -> int:
        return self.member.shape[0] if self.member.shape else 0

    @property
    def item_shape(self) -> tuple[int, ...]:
        return self.member.shape[1:]

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}:{self.key}: index {index} out of range 0..{len(self) - 1}")
        if self._memmap is not None:
            return np.array(self._memmap[index])
        item_bytes = int(np.prod(self.item_shape, dtype=np.int64)) * self.member.dtype.itemsize
        if self._stream is None or index < self._next:
            if self._stream is not None:
                self._stream.close()
            self._stream = self._zip.open(self._info)
            self._stream.read(self.member.data_offset)
            self._next = 0
        skip = (index - self._next) * item_bytes
        while skip > 0:
            chunk = self._stream.read(min(skip, 1 << 24))
            if not chunk:
                raise EOFError(f"{self.path}:{self.key}: truncated member")
            skip -= len(chunk)
        data = self._stream.read(item_bytes)
        if len(data) != item_bytes:
            raise EOFError(f"{self.path}:{self.key}: truncated at item {index}")
        self._next = index + 1
        return np.frombuffer(data, dtype=self.member.dtype).reshape(self.item_shape).copy()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._zip.close()
