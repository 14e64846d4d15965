"""Tensors over numpy arrays without a copy, read-only memory-mapped arrays (the preprocessed cache) included."""
from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["tensor_view"]


def tensor_view(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy(array)``, also for a read-only array without torch's "not writable" warning.

    The tensor shares the array's memory: copying a whole memory-mapped case for each read would cost
    ~50 MB per BraTS case and patch. The caller must only read a tensor made from a read-only array.
    """
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)
