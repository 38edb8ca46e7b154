"""Detectron weight files: a pickled ``{"blobs": {name: ndarray}, "cfg": yaml}`` (or a bare
``{name: ndarray}``), written by Python 2 with pickle protocol 2.

A pickle can run code, so :func:`load_blobs` unpickles with an allow-list: the few numpy
globals that rebuild an ndarray and its dtype, and ``_codecs.encode`` restricted to latin-1
(how Python 3 protocol-2 pickles carry bytes). Any other global is refused before anything
is called. ``cfg`` is not safe YAML and is never parsed.

:func:`save_blobs` writes the same form Python 2 wrote (``str`` keys and array bytes as
``BINSTRING``, ``numpy.core.multiarray._reconstruct``), so Detectron's loader reads it.
"""
from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np

from sadpipe.errors import UserError
from sadpipe.fileio import atomic_path

BLOBS_KEY = "blobs"
LATIN1 = "latin1"
NUMERIC_KINDS = "fiub"     # float, signed, unsigned, bool arrays
RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]   # numpy's own _reconstruct


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


def _latin1_encode(text, encoding=LATIN1):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, and for nothing else."""
    spelled = str(encoding).lower().replace("-", "").replace("_", "")
    if not isinstance(text, str) or spelled not in ("latin1", "iso88591"):
        raise RefusedGlobal(f"_codecs.encode with encoding {encoding!r}")
    return text.encode(LATIN1)


ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): RECONSTRUCT,    # numpy < 2, Python 2
    ("numpy._core.multiarray", "_reconstruct"): RECONSTRUCT,   # numpy >= 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class ArrayDictUnpickler(pickle.Unpickler):
    """An unpickler that can build dicts, lists, strings, numbers and numpy arrays only."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise RefusedGlobal(f"persistent id {pid!r}")


def load_blobs(path) -> dict[str, np.ndarray]:
    """The blobs of a Detectron weight file, as numeric ndarrays by name.

    Raises UserError (one line, naming the file) for a missing, truncated or foreign file,
    a refused global, or an entry that is not a numeric array."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            obj = ArrayDictUnpickler(f, encoding=LATIN1).load()
    except RefusedGlobal as err:
        raise UserError(f"{path}: refused to unpickle: it needs {err}, which a Detectron "
                        "weight file (numpy arrays only) never does; nothing was run") from None
    except (EOFError, pickle.UnpicklingError) as err:
        if isinstance(err, EOFError) or "truncated" in str(err):
            raise UserError(f"{path}: the file ends early (truncated download?)") from None
        raise UserError(f"{path}: not a Detectron weight file ({err})") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user error here
        raise UserError(f"{path}: not a Detectron weight file ({type(err).__name__}: "
                        f"{str(err)[:120]})") from None
    return _blob_dict(obj, path)


def _blob_dict(obj, path: Path) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a Detectron weight file (holds a {type(obj).__name__}, "
                        "not a dict of blobs)")
    blobs = obj[BLOBS_KEY] if isinstance(obj.get(BLOBS_KEY), dict) else obj
    for name, value in blobs.items():
        if not isinstance(name, str):
            raise UserError(f"{path}: blob name {name!r} is not a string")
        if not isinstance(value, np.ndarray) or value.dtype.kind not in NUMERIC_KINDS:
            raise UserError(f"{path}: blob {name} is not a numeric array "
                            f"({getattr(value, 'dtype', type(value).__name__)})")
    return dict(blobs)


def save_blobs(path, blobs: dict[str, np.ndarray]) -> None:
    """Write ``{"blobs": blobs}`` atomically, as Python 2's pickle protocol 2 (names sorted)."""
    out = io.BytesIO()
    out.write(pickle.PROTO + bytes([2]) + pickle.EMPTY_DICT)
    _write_str(out, BLOBS_KEY)
    out.write(pickle.EMPTY_DICT + pickle.MARK)
    for name in sorted(blobs):
        _write_str(out, name)
        _write_array(out, np.asarray(blobs[name]))
    out.write(pickle.SETITEMS + pickle.SETITEM + pickle.STOP)
    with atomic_path(path) as tmp:
        tmp.write_bytes(out.getvalue())


def _write_str(out: io.BytesIO, data) -> None:
    """A Python 2 ``str`` (bytes; text is latin-1 encoded)."""
    if isinstance(data, str):
        data = data.encode(LATIN1)
    if len(data) < 256:
        out.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
    else:
        out.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)


def _write_global(out: io.BytesIO, module: str, name: str) -> None:
    out.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))


def _write_int(out: io.BytesIO, value: int) -> None:
    out.write(pickle.BININT + struct.pack("<i", value))


def _write_array(out: io.BytesIO, array: np.ndarray) -> None:
    """``ndarray.__reduce__`` as numpy 1.x under Python 2 pickles it: _reconstruct(ndarray,
    (0,), 'b'), then state (1, shape, dtype, is_fortran, raw C-order bytes)."""
    dtype = array.dtype.newbyteorder("<")
    _write_global(out, "numpy.core.multiarray", "_reconstruct")
    _write_global(out, "numpy", "ndarray")
    _write_int(out, 0)
    out.write(pickle.TUPLE1)
    _write_str(out, "b")
    out.write(pickle.TUPLE3 + pickle.REDUCE + pickle.MARK)
    _write_int(out, 1)
    out.write(pickle.MARK)
    for side in array.shape:
        _write_int(out, side)
    out.write(pickle.TUPLE)
    _write_global(out, "numpy", "dtype")
    _write_str(out, dtype.str[1:])
    _write_int(out, 0)
    _write_int(out, 1)
    out.write(pickle.TUPLE3 + pickle.REDUCE + pickle.MARK)
    _write_int(out, 3)
    _write_str(out, "<" if dtype.itemsize > 1 else "|")
    out.write(pickle.NONE * 3)
    _write_int(out, -1)
    _write_int(out, -1)
    _write_int(out, 0)
    out.write(pickle.TUPLE + pickle.BUILD + pickle.NEWFALSE)
    _write_str(out, np.ascontiguousarray(array, dtype=dtype).tobytes())
    out.write(pickle.TUPLE + pickle.BUILD)
