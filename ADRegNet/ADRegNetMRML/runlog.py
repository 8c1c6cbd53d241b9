r"""A readable log of one registration: inputs, settings, stages with times, results, warnings.

Shown live in the module panel and kept with the outputs as a text node (saved with the scene),
so a result can be traced back to what produced it.
"""
from __future__ import annotations

import datetime
import time
from typing import Callable, Optional

import numpy as np

__all__ = ["RunLog", "log_text_node"]


def _pick(value, key: str):
    """``value[key]`` for a dict of named measures that has it, else ``value`` unchanged."""
    return value.get(key, value) if isinstance(value, dict) else value


def _number(value, fmt: str = ".4f") -> str:
    if isinstance(value, dict):
        value = next((v for v in value.values() if isinstance(v, (int, float))), None)
    return "n/a" if value is None else format(float(value), fmt)


class RunLog:
    """Collects timestamped lines; ``listener(line)`` is called for each new line.

    Args:
        listener: e.g. appends the line to the panel's log box.
        clock: seconds counter (tests pass a fake one).
    """

    def __init__(self, listener: Optional[Callable[[str], None]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.listener, self.clock = listener, clock
        self.lines: list[str] = []
        self._t0 = clock()
        self._last_stage = None
        self.add(f"AD-RegNet registration started {datetime.datetime.now().isoformat(timespec='seconds')}")

    def add(self, text: str) -> None:
        """Append one line, prefixed with the seconds since the start."""
        line = f"[{self.clock() - self._t0:7.1f} s] {text}"
        self.lines.append(line)
        if self.listener is not None:
            self.listener(line)

    def progress(self, fraction: float, text: str) -> None:
        """A progress report: logged when the stage text changes."""
        if text and text != self._last_stage:
            self._last_stage = text
            self.add(f"{text} ({100 * fraction:.0f}%)")

    def inputs(self, fixed, moving, settings: dict, landmarks: int = 0, masks: Optional[dict] = None,
               initial_transform: Optional[np.ndarray] = None) -> None:
        """Log the inputs (``Image`` objects: name, size, spacing) and the engine settings."""
        for role, image in (("fixed", fixed), ("moving", moving)):
            g = image.geometry
            self.add(f"{role}: '{image.name}' {g.size[0]}x{g.size[1]}x{g.size[2]} voxels, "
                     f"spacing {', '.join(f'{s:.3g}' for s in g.spacing)} mm")
        self.add("settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()))
        self.add(f"landmark pairs: {landmarks}" if landmarks else "landmark pairs: none")
        for role, name in (masks or {}).items():
            self.add(f"{role}: '{name}'")
        if initial_transform is not None:
            shift = np.linalg.norm(np.asarray(initial_transform)[:3, 3])
            self.add(f"initial transform: the moving volume's linear transform (translation {shift:.1f} mm)")

    def results(self, metrics: dict) -> None:
        """Log the figures a clinician checks: similarity, folds, TRE, time, warnings."""
        key = "nmi" if metrics.get("multimodal") else "ncc"  # NCC means nothing across contrasts
        before, after = (_pick(metrics.get(name), key) for name in ("similarity_before", "similarity_after"))
        self.add(f"similarity ({key.upper()}) {_number(before)} -> {_number(after)}")
        jac = metrics.get("jacobian") or {}
        if jac:
            self.add(f"Jacobian: min {_number(jac.get('min'), '.3f')}, folding voxels {jac.get('folding_count', 'n/a')}")
        for key, what in (("tre_before", "TRE before (the volumes as stored)"),
                          ("tre_start", "TRE at the start (through the moving volume's starting transform)"),
                          ("tre_after", "TRE after")):
            entry = metrics.get(key)
            if isinstance(entry, dict) and "mean" in entry:
                self.add(f"{what}: mean {entry['mean']:.2f} mm, max {entry.get('max', float('nan')):.2f} mm")
        total = (metrics.get("timings_s") or {}).get("total")
        if total is not None:
            self.add(f"engine time {total:.1f} s")
        for warning in metrics.get("warnings", []) or []:
            self.add(f"warning: {warning}")

    def text(self) -> str:
        """The whole log."""
        return "\n".join(self.lines) + "\n"


def log_text_node(scene, log: RunLog, name: str, node=None):
    """Put the log in a vtkMRMLTextNode (new unless ``node`` is given)."""
    from .frames import ROLE_ATTRIBUTE

    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTextNode", scene.GenerateUniqueName(name))
    node.SetText(log.text())
    node.SetAttribute(ROLE_ATTRIBUTE, "log")
    return node
