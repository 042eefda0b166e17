"""Wrong, missing and unknown-version files give clear errors naming the file."""

import h5py
import numpy as np
import pytest

import daqload
from conftest import write_run_file


def test_missing_file(tmp_path):
    p = tmp_path / "nope.h5"
    with pytest.raises(daqload.RunNotFoundError, match="nope.h5: no such run file"):
        daqload.open_run(p)
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError
        daqload.open_run([str(p)])
    with pytest.raises(daqload.RunNotFoundError, match=r"no file matches"):
        daqload.open_run(str(tmp_path / "x_*.h5"))
    with pytest.raises(daqload.RunNotFoundError, match="holds no .h5 run files"):
        daqload.open_run(tmp_path)
    with pytest.raises(daqload.RunNotFoundError, match="empty list"):
        daqload.open_run([])


def test_not_hdf5(tmp_path):
    p = tmp_path / "notes.h5"
    p.write_text("hello, not HDF5\n" * 100)
    with pytest.raises(daqload.RunFormatError, match=r"notes.h5: not a daq1 run file \(not an HDF5 file\)"):
        daqload.open_run(p)


def test_hdf5_but_not_a_run(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(daqload.RunFormatError, match=r"other.h5: not a daq1 run file: no root attribute 'format'"):
        daqload.open_run(p)
    q = write_run_file(tmp_path / "wrongfmt.h5", fmt="daq2-run")
    with pytest.raises(daqload.RunFormatError, match=r"wrongfmt.h5: not a daq1 run file: root attribute format = 'daq2-run'"):
        daqload.open_run(q)


@pytest.mark.parametrize("version", [2, 0, None])
def test_unknown_format_version(tmp_path, version):
    p = write_run_file(tmp_path / "future.h5", version=version)
    with pytest.raises(daqload.RunFormatError, match=rf"future.h5: unsupported format_version {version}"):
        daqload.open_run(p)
    with pytest.raises(daqload.RunFormatError, match="future.h5"):
        daqload.RunDataset(p)


def test_damaged_layout(tmp_path):
    p = write_run_file(tmp_path / "dmg.h5")
    with h5py.File(p, "a") as f:
        del f["units/u0/timestamp_ns"]
    with pytest.raises(daqload.RunFormatError, match=r"dmg.h5: damaged daq1 run file: /units/u0 has no dataset timestamp_ns"):
        daqload.open_run(p)


def test_files_of_two_runs(tmp_path):
    a = write_run_file(tmp_path / "a_00000.h5", run_name="a")
    b = write_run_file(tmp_path / "a_00001.h5", run_name="a", started_at="2026-02-02T00:00:00.000Z")
    with pytest.raises(daqload.RunFormatError, match="pass the files of one run only"):
        daqload.open_run([a, b])


def test_one_bad_file_in_a_series_is_named(tmp_path):
    a = write_run_file(tmp_path / "s_00000.h5", run_name="s")
    b = tmp_path / "s_00001.h5"
    b.write_bytes(b"\0" * 4096)
    with pytest.raises(daqload.RunFormatError, match="s_00001.h5"):
        daqload.open_run(tmp_path / "s")
    assert daqload.open_run(a).files == [a]


def test_stream_errors(tmp_path):
    from daqload import RunStream
    p = tmp_path / "notes.h5"
    p.write_text("hello\n")
    with pytest.raises(daqload.RunFormatError, match="notes.h5: not a daq1 run file"):
        list(RunStream(p, idle_timeout=1))
    with pytest.raises(daqload.DaqloadError, match="no run file appeared within 0.3 s"):
        list(RunStream(tmp_path / "never", idle_timeout=0.3, poll_interval=0.05))
    q = write_run_file(tmp_path / "future.h5", version=9)
    with pytest.raises(daqload.RunFormatError, match="future.h5: unsupported format_version 9"):
        list(RunStream(q, idle_timeout=1))


def test_stream_of_a_closed_file_reads_it_and_ends(tmp_path):
    from daqload import RunStream
    p = write_run_file(tmp_path / "done.h5", units={0: 50, 2: 30})
    s = RunStream(p, fields=("frame_number", "unit"), idle_timeout=5)
    items = list(s)
    assert s.ended_by == "stopped_at"
    got = sorted((int(i["unit"]), int(i["frame_number"])) for i in items)
    assert got == sorted([(0, 10 + k) for k in range(50)] + [(2, 10 + k) for k in range(30)])


def test_a_directory_of_runs_skips_the_calibration_file_beside_them(tmp_path, caplog):
    """daqd writes a pedestal run's calibration file into the same directory
    as the runs (runs/ped.calib.h5): open_run("runs/") reads the runs and
    says which files it skipped and why."""
    run = write_run_file(tmp_path / "beam01.h5", run_name="beam01")
    with h5py.File(tmp_path / "ped.calib.h5", "w") as f:
        f.attrs["format"] = "daq1-calibration"
        f.attrs["format_version"] = 1
    with h5py.File(tmp_path / "notes.h5", "w") as f:
        f["x"] = np.arange(3)
    with caplog.at_level("INFO", logger="daqload"):
        r = daqload.open_run(tmp_path)
    assert r.files == [str(run)]
    assert r.skipped == [
        (str(tmp_path / "notes.h5"), "an HDF5 file without a 'format' attribute, not a daq1 run file"),
        (str(tmp_path / "ped.calib.h5"), "a calibration file (daqd --pedestal-run), not a run file"),
    ]
    assert "ped.calib.h5: skipped: a calibration file" in caplog.text
    # Named on its own, a calibration file is still refused, with the reason.
    with pytest.raises(daqload.RunFormatError, match="not a daq1 run file: root attribute format = 'daq1-calibration'"):
        daqload.open_run(tmp_path / "ped.calib.h5")
    # A directory with nothing but such files: not found, and why.
    (tmp_path / "beam01.h5").unlink()
    with pytest.raises(daqload.RunNotFoundError, match=r"holds no .h5 run files \(skipped 2 that are not run files: "
                                                      r"notes.h5: .*; ped.calib.h5: a calibration file"):
        daqload.open_run(tmp_path)
