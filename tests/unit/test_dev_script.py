"""`./dev`'s first run chooses the CPU build of torch: the wheel pip already finds when it is a +cpu build, the
PyTorch CPU index otherwise (the default index's build pulls several GB of CUDA packages).

The script runs for real in a scratch folder; only its .venv's pip is a stand-in, which answers the dry run
with a given wheel and records every install it is asked for (nothing is downloaded).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def _first_run(tmp_path: Path, dry_run_install: list[dict]) -> list[str]:
    """Runs ./dev with a .venv whose pip answers the dry run with `dry_run_install`; returns pip's calls."""
    shutil.copy(ROOT / "dev", tmp_path / "dev")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_ = tmp_path / ".venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "python").symlink_to(sys.executable)
    (tmp_path / "report.json").write_text(json.dumps({"install": dry_run_install}))
    (bin_ / "pip").write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {tmp_path}/pip-calls\n'
        f'case "$*" in *--dry-run*) cat {tmp_path}/report.json ;; esac\n')
    (bin_ / "sizer").write_text("#!/usr/bin/env bash\necho sizer \"$@\"\n")
    for tool in ("pip", "sizer"):
        (bin_ / tool).chmod(0o755)
    done = subprocess.run(["bash", str(tmp_path / "dev"), "--version"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("sizer --version")  # then the command itself
    return (tmp_path / "pip-calls").read_text().splitlines()


def _torch_install(calls: list[str]) -> str | None:
    return next((c for c in calls if "torch==2.13.0" in c and "--dry-run" not in c), None)


def test_without_a_local_cpu_wheel_torch_comes_from_the_pytorch_cpu_index(tmp_path):
    pypi = "https://files.pythonhosted.org/packages/torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    calls = _first_run(tmp_path, [{"download_info": {"url": pypi}}])
    assert CPU_INDEX in _torch_install(calls)
    assert calls[-1].endswith("-e .[dev]")  # torch first, then the project


def test_a_local_cpu_wheel_is_taken_as_it_is(tmp_path):
    local = "file:///opt/wheels/torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    calls = _first_run(tmp_path, [{"download_info": {"url": local}}])
    assert "--index-url" not in _torch_install(calls)


def test_an_installed_torch_is_left_alone(tmp_path):
    calls = _first_run(tmp_path, [])
    assert _torch_install(calls) is None and calls[-1].endswith("-e .[dev]")
