"""Type aliases shared across ADRegNetLib."""
from __future__ import annotations

from typing import Callable, Union

import numpy as np
import torch

#: Anything accepted where a device is expected: "auto", "cpu", "cuda", "cuda:1" or a torch.device.
DeviceLike = Union[str, torch.device]
#: progress(fraction in [0, 1], stage text)
ProgressCallback = Callable[[float, str], None]
#: should_stop() -> True when the user asked to cancel
StopCallback = Callable[[], bool]
ArrayLike = Union[np.ndarray, torch.Tensor]
