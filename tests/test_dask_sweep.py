"""`npstn sweep --dask ADDRESS` through a real dask.distributed scheduler and worker (loopback only).

A LocalCluster starts a scheduler and one worker *process* on 127.0.0.1; the
sweep connects to it by address, as it would to a cluster on other machines.
The worker is another process, so monkeypatching here does not reach it:
``client.run`` installs the synthetic digits in the worker itself (this
module is pickled by value for that). The runs use the numpy backend, so the
worker compiles nothing.
"""
import json
import shutil
import sys

import pytest

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

from npstn import train as T  # noqa: E402
from npstn.cli import main  # noqa: E402


def _install_synthetic_in_this_process():
    from npstn import train as T
    from npstn.bench.train import synthetic_digits as digits
    from npstn.data import DistortedMNIST, test_set

    xtr, ytr = digits(40, 0)
    xte, yte = digits(20, 1)
    T.data.load_train_source = lambda distortion, data_dir=None, backend=None: DistortedMNIST(
        distortion, backend=backend, images=xtr, labels=ytr)
    T.data.load_test_set = lambda distortion, data_dir=None: test_set(distortion, images=xte, labels=yte, cache=False)
    return "synthetic"


@pytest.fixture(scope="module")
def cluster():
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=40) as c:
        with distributed.Client(c.scheduler_address, timeout=60) as client:
            assert set(client.run(_install_synthetic_in_this_process).values()) == {"synthetic"}
        yield c
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_sweep_on_a_real_scheduler(cluster, tmp_path, capsys):
    address = cluster.scheduler_address
    assert address.startswith("tcp://127.0.0.1:")
    args = ["sweep", "--models", "fcn,st-fcn", "--distortions", "rts", "--steps", "3", "--batch-size", "4",
            "--backend", "numpy", "--out", str(tmp_path), "--dask", address]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"on dask at {address}" in out and out.count(": finished:") == 2
    results = json.loads((tmp_path / "results.json").read_text())
    assert {r["status"] for r in results} == {"finished"}
    for r in results:  # the full metrics came back to the client with each result
        m = r["metrics"]
        assert m["status"] == "finished" and m["steps"] == 3 and m["evals"]
        assert m["test_error_percent"] == r["test_error_percent"]
        assert m["config"]["model"] == r["config"]["model"]
    table = (tmp_path / "results.md").read_text()
    assert "| FCN |" in table and "| ST-FCN affine |" in table

    # The client reads nothing from the run folders: with them gone (as when the workers write
    # them on their own disks) the table is the same. (Here the worker shares the disk, so it
    # trains the runs again, bit for bit.)
    for d in tmp_path.iterdir():
        if d.is_dir():
            shutil.rmtree(d)
    (tmp_path / "results.md").unlink()
    assert main(args) == 0
    assert (tmp_path / "results.md").read_text() == table
    capsys.readouterr()

    # a second sweep skips the finished runs (on the worker) and still reports their metrics
    assert main(args) == 0
    assert capsys.readouterr().out.count(": skipped:") == 2
    again = json.loads((tmp_path / "results.json").read_text())
    assert all(r["metrics"] and r["metrics"]["status"] == "finished" for r in again)


def test_unreachable_scheduler_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(T.sweep, "DASK_CONNECT_TIMEOUT", 2)
    rc = main(["sweep", "--steps", "1", "--out", str(tmp_path), "--dask", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the dask scheduler" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
