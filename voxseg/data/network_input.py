"""What a network sees of a preprocessed case: the plan's channel subset, then, for 2.5-D, each slice's
neighbours stacked as channels. The training loader and inference both build their input here, so the
two cannot drift apart.

- Channel subsets (Yildiz et al. 2024, e.g. FLAIR alone): :func:`channel_indices` turns names into
  positions (the one place this is computed; ``RunPlan.channel_indices`` calls it), :func:`select_channels`
  applies them.
- 2.5-D stacks: :func:`stack_neighbours` makes one slice's stack (training draws one slice at a time);
  :func:`network_input` makes it for one slice or for every slice of the volume (inference), through the
  same function.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["channel_indices", "select_channels", "stack_neighbours", "network_input"]


def channel_indices(channel_names: Sequence[str], wanted: Sequence[str] | None) -> list[int]:
    """Positions in ``channel_names`` of the channels named in ``wanted``, in ``wanted``'s order.

    Names match case-insensitively. ``wanted`` ``None`` (or empty) keeps every channel.

    Raises:
        ValueError: a wanted name is not among ``channel_names``, or one is named twice.
    """
    if not wanted:
        return list(range(len(channel_names)))
    lower = [str(c).lower() for c in channel_names]
    missing = [c for c in wanted if str(c).lower() not in lower]
    if missing:
        raise ValueError(f"channels {list(missing)} are not in the dataset's channels {list(channel_names)}")
    indices = [lower.index(str(c).lower()) for c in wanted]
    if len(set(indices)) != len(indices):
        raise ValueError(f"channel subset {list(wanted)} names a channel twice")
    return indices


def select_channels(image: np.ndarray, indices: Sequence[int] | None) -> np.ndarray:
    """``image[indices]`` of a ``(C, ...)`` array (``None``: ``image`` itself).

    A view when the indices are consecutive and in order (one channel, or a run of them), so a
    memory-mapped case stays mapped; otherwise a copy.
    """
    if indices is None:
        return image
    indices = [int(i) for i in indices]
    if indices and indices == list(range(indices[0], indices[0] + len(indices))):
        return image[indices[0]:indices[0] + len(indices)]
    return image[indices]


def stack_neighbours(image: np.ndarray, z: int, k: int) -> np.ndarray:
    """2.5-D input of one slice: slices ``z - k//2 .. z + k//2`` of every channel stacked as channels.

    Args:
        image: ``(C, Z, Y, X)``.
        z: centre slice index (the slice whose label is predicted).
        k: odd number of slices.

    Returns:
        ``(C * k, Y, X)`` with channel ``c * k + j`` = channel ``c`` at slice ``z - k//2 + j``;
        slices beyond the volume are 0.
    """
    if k < 1 or k % 2 == 0:
        raise ValueError(f"k must be a positive odd number of slices, got {k}")
    c, nz = image.shape[0], image.shape[1]
    h = k // 2
    if 0 <= z - h and z + h < nz:
        return image[:, z - h:z + h + 1].reshape((c * k,) + image.shape[2:])
    out = np.zeros((c, k) + image.shape[2:], dtype=image.dtype)
    a, b = max(z - h, 0), min(z + h + 1, nz)
    out[:, a - (z - h):b - (z - h)] = image[:, a:b]
    return out.reshape((c * k,) + image.shape[2:])


def network_input(image: np.ndarray, channels: Sequence[int] | None = None, slices: int = 1,
                  z: int | None = None) -> np.ndarray:
    """The network's input from a preprocessed ``(C, Z, Y, X)`` case.

    Args:
        image: ``(C, Z, Y, X)`` float32, all the dataset's channels (or already a subset, with ``channels``
            ``None``).
        channels: indices of the channels to keep (:func:`channel_indices`), in the network's order;
            ``None`` keeps all.
        slices: ``k`` > 1 stacks each slice's ``k`` neighbours as channels (2.5-D, odd ``k``:
            :func:`stack_neighbours`); 1 leaves the slices as they are (3-D and 2-D).
        z: one slice (training draws one at a time): returns ``(C' * k, Y, X)``; ``None``: every slice.

    Returns:
        ``(C' * k, Z, Y, X)`` (``z`` None) or ``(C' * k, Y, X)``; with ``slices == 1`` and consecutive
        channels, a view of ``image``.
    """
    image = select_channels(image, channels)
    if z is not None:
        return image[:, z] if slices == 1 else stack_neighbours(image, z, slices)
    if slices == 1:
        return image
    depth = image.shape[1]
    out = np.empty((image.shape[0] * slices, depth) + image.shape[2:], dtype=image.dtype)
    for j in range(depth):
        out[:, j] = stack_neighbours(image, j, slices)
    return out
