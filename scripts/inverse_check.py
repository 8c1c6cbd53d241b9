"""Inverse figures on a benchmark case: forward vs inverse landmark TRE and the inverse-consistency error.

Usage: .venv/bin/python scripts/inverse_check.py CASE_DIR   (a case folder written by `python -m benchmarks`)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
from ADRegNetLib.io import read_image
from ADRegNetLib.engine import register
from ADRegNetLib.spatial.transform import map_points
from benchmarks.cases import Case
case = Case.load(Path(sys.argv[1]))
f, m = read_image(case.fixed_path), read_image(case.moving_path)
r = register(f, m, preset=case.preset, quality='balanced', device='cpu')
fl, ml = case.fixed_landmarks(), case.moving_landmarks()
fwd = np.linalg.norm(r.transform.map_points(fl) - ml, axis=1).mean()
back = np.linalg.norm(map_points(r.inverse_disp_mm, r.moving_geometry, ml) - fl, axis=1).mean()
print("forward TRE", round(fwd, 3), "inverse TRE", round(back, 3), "IC", r.metrics['inverse_consistency_mm'], "times", r.metrics['timings_s'])
