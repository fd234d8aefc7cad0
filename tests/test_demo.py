"""The quickstart demo and the top-level CLI flags."""
import subprocess
import sys

import npstn
from npstn.cli import main
from npstn.demo import run_demo


def test_demo_learns_the_spirals(tmp_path):
    m = run_demo(steps=600, out=tmp_path, progress=False)
    assert m["test_accuracy"] > 0.9, m
    assert (tmp_path / "model.npz").is_file() and (tmp_path / "demo.png").is_file()


def test_version_and_help(capsys):
    out = subprocess.run([sys.executable, "-m", "npstn", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"npstn {npstn.__version__}"
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_quickstart_runs_both_models_and_draws(tmp_path):
    from npstn.data import DistortedMNIST, test_set
    from npstn.quickstart import run_quickstart
    from test_train import synthetic_digits

    xtr, ytr = synthetic_digits(60, 0)
    xte, yte = synthetic_digits(20, 1)
    data = (DistortedMNIST("rts", images=xtr, labels=ytr), test_set("rts", images=xte, labels=yte, cache=False))
    results = run_quickstart(out=tmp_path, steps=4, progress=False, data=data)
    assert set(results) == {"fcn", "st-fcn"}
    for m in results.values():
        assert 0.0 <= m["test_error_percent"] <= 100.0 and m["steps"] == 4
    assert (tmp_path / "st-fcn" / "viz" / "transformations.png").is_file()
    assert (tmp_path / "summary.json").is_file()
    # a rerun continues the finished runs instead of refusing to overwrite them
    again = run_quickstart(out=tmp_path, steps=4, progress=False, data=data)
    assert again["st-fcn"]["test_error_percent"] == results["st-fcn"]["test_error_percent"]
