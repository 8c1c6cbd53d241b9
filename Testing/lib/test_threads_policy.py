"""Importing ADRegNetLib makes OpenMP's idle threads sleep (OMP_WAIT_POLICY=PASSIVE) unless the user chose."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = ("import os, ADRegNetLib, torch; torch.set_num_threads(2); "
         "x = torch.randn(64, 64, 64); (x * 2).sum().item(); print(os.environ.get('OMP_WAIT_POLICY'))")


def _run(env_value):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
                         cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_passive_by_default_and_the_users_choice_kept():
    assert _run(None) == "PASSIVE"  # set before torch loaded its OpenMP runtime
    assert _run("ACTIVE") == "ACTIVE"
