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
