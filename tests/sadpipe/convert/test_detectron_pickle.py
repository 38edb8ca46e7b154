"""Reading Detectron weight files runs nothing from them; writing gives what Python 2 wrote."""
import builtins
import os
import pickle

import numpy as np
import pytest

from sadpipe.convert.detectron_pickle import load_blobs, save_blobs
from sadpipe.errors import UserError
from tests.sadpipe.convert.detectron_reference import write_python2_pickle

BLOBS = {"conv1_w": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
         "fpn_6_b": np.array([0.5, -1.25], dtype=np.float32)}


class RunsAShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class CallsEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w')",)


class LoadsWithNumpy:
    def __reduce__(self):
        return np.load, ("/nonexistent.npy",)


class EncodesOtherwise:
    def __reduce__(self):
        import _codecs
        return _codecs.encode, ("x", "rot13")


@pytest.mark.parametrize("payload, refused", [
    (RunsAShell, f"{os.system.__module__}.system"),
    (CallsEval, "__builtin__.eval"),        # protocol 2 spells builtins the Python 2 way
    (lambda marker: LoadsWithNumpy(), "numpy.load"),
    (lambda marker: EncodesOtherwise(), "_codecs.encode with encoding 'rot13'"),
])
def test_pickles_that_would_run_code_are_refused(tmp_path, payload, refused):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"blobs": {**BLOBS, "x": payload(marker)}}, protocol=2))
    with pytest.raises(UserError) as err:
        load_blobs(path)
    assert str(path) in err.value.message and refused in err.value.message
    assert "\n" not in err.value.message
    assert not marker.exists()


def test_reads_python2_files_wrapped_or_bare(tmp_path):
    for wrapped in (True, False):
        write_python2_pickle(tmp_path / "py2.pkl", BLOBS, wrapped=wrapped)
        blobs = load_blobs(tmp_path / "py2.pkl")
        assert sorted(blobs) == sorted(BLOBS)
        assert all(np.array_equal(blobs[k], v) and blobs[k].dtype == v.dtype for k, v in BLOBS.items())


def test_reads_python3_protocol2_files(tmp_path):
    """Python 3 pickles bytes through _codecs.encode(text, 'latin1') and numpy 2 names
    numpy._core: both admitted."""
    (tmp_path / "py3.pkl").write_bytes(pickle.dumps({"blobs": BLOBS, "cfg": "x"}, protocol=2))
    blobs = load_blobs(tmp_path / "py3.pkl")
    assert all(np.array_equal(blobs[k], v) for k, v in BLOBS.items())


@pytest.mark.parametrize("content, message", [
    (pickle.dumps([1, 2], protocol=2), "holds a list, not a dict of blobs"),
    (pickle.dumps({"blobs": {"a": "text"}}, protocol=2), "blob a is not a numeric array"),
    (b"\x80\x02}q\x00(X\x01", "ends early"),
    (b"\x00\x01 something else", "not a Detectron weight file"),
])
def test_other_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "x.pkl"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_blobs(path)
    assert message in err.value.message and "\n" not in err.value.message


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_blobs(tmp_path / "none.pkl")


def test_save_writes_python2_form_that_reads_back(tmp_path):
    save_blobs(tmp_path / "out.pkl", BLOBS)
    data = (tmp_path / "out.pkl").read_bytes()
    assert b"numpy.core.multiarray\n_reconstruct\n" in data and b"numpy._core" not in data
    back = pickle.loads(data, encoding="latin1")
    assert list(back) == ["blobs"]
    assert all(back["blobs"][k].tobytes() == v.tobytes() for k, v in BLOBS.items())
    assert all(load_blobs(tmp_path / "out.pkl")[k].tobytes() == v.tobytes() for k, v in BLOBS.items())
