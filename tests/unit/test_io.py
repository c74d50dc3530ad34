import numpy as np
import pytest

from hsixai.errors import HsixaiError
from hsixai.io import BandReader, NpyStreamWriter, inspect_npy, staged_outputs


def test_staged_outputs_replace_only_on_success(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("good")
    with pytest.raises(RuntimeError):
        with staged_outputs(target) as (stage,):
            (stage / "new.txt").write_text("half")
            raise RuntimeError("killed")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with staged_outputs(target) as (stage,):
        (stage / "new.txt").write_text("done")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_stale_staging_directories_are_cleaned(tmp_path):
    (tmp_path / ".out.tmp-99999").mkdir()
    with staged_outputs(tmp_path / "out"):
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_stream_writer_and_band_reader_round_trip(tmp_path):
    cube = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    with NpyStreamWriter(tmp_path / "c.npy", cube.shape, np.float32) as w:
        w.write(cube[:2])
        for band in cube[2:]:
            w.write(band)
    assert np.array_equal(np.load(tmp_path / "c.npy"), cube)
    with BandReader(inspect_npy(tmp_path / "c.npy", "cube")) as r:
        assert np.array_equal(r.read(3), cube[3])


def test_stream_writer_refuses_an_incomplete_array(tmp_path):
    with pytest.raises(ValueError, match="wrote 1 of 3"):
        with NpyStreamWriter(tmp_path / "c.npy", (3, 2, 2), np.float32) as w:
            w.write(np.zeros((2, 2)))


def test_truncated_npy_is_detected(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((10, 10), dtype=np.float32))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(data[:-8])
    with pytest.raises(HsixaiError, match="truncated"):
        inspect_npy(tmp_path / "a.npy", "cube")
