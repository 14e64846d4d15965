"""The network's input (voxseg.data.network_input): channel subsets by name, 2.5-D stacks of one slice or of
the whole volume."""
from __future__ import annotations

import numpy as np
import pytest

from voxseg.config import RunPlan, TrainConfig
from voxseg.data.network_input import channel_indices, network_input, select_channels, stack_neighbours


def test_stack_neighbours_shapes_centre_slice_and_zero_edges():
    image = np.arange(2 * 6 * 3 * 4, dtype=np.float32).reshape(2, 6, 3, 4) + 1
    s = stack_neighbours(image, 3, 3)
    assert s.shape == (6, 3, 4)
    for c in range(2):
        for j in range(3):
            np.testing.assert_array_equal(s[c * 3 + j], image[c, 3 - 1 + j])
    edge = stack_neighbours(image, 0, 5)
    assert edge.shape == (10, 3, 4)
    assert not edge[0].any() and not edge[1].any()  # slices -2, -1 do not exist
    np.testing.assert_array_equal(edge[2], image[0, 0])  # centre
    np.testing.assert_array_equal(edge[5 + 4], image[1, 2])
    with pytest.raises(ValueError):
        stack_neighbours(image, 1, 2)


def test_channel_indices_by_name_in_the_wanted_order():
    names = ["T1", "T1ce", "T2", "FLAIR"]
    assert channel_indices(names, ["flair"]) == [3]
    assert channel_indices(names, ["flair", "t1"]) == [3, 0]
    assert channel_indices(names, None) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="not in the dataset's channels"):
        channel_indices(names, ["PD"])
    with pytest.raises(ValueError, match="twice"):
        channel_indices(names, ["t2", "T2"])
    plan = RunPlan(channel_names=names, label_values=[0, 1], train=TrainConfig(channels=["t2", "flair"]))
    assert plan.channel_indices == [2, 3]  # the plan asks the same function


def test_select_channels_views_consecutive_channels_and_copies_others():
    image = np.stack([np.full((2, 2, 2), v, np.float32) for v in range(4)])
    assert select_channels(image, None) is image
    run = select_channels(image, [1, 2])
    assert np.shares_memory(run, image) and run[:, 0, 0, 0].tolist() == [1, 2]
    other = select_channels(image, [3, 0])
    assert not np.shares_memory(other, image) and other[:, 0, 0, 0].tolist() == [3, 0]


def test_whole_volume_stack_is_every_slice_stack():
    image = np.random.default_rng(0).normal(size=(3, 5, 4, 6)).astype(np.float32)
    whole = network_input(image, [2, 0], slices=3)
    assert whole.shape == (6, 5, 4, 6)
    for z in range(5):
        np.testing.assert_array_equal(whole[:, z], network_input(image, [2, 0], slices=3, z=z))
        np.testing.assert_array_equal(whole[:, z], stack_neighbours(image[[2, 0]], z, 3))
    assert network_input(image, [0, 1]).base is not None  # 3-D / 2-D: a view
    np.testing.assert_array_equal(network_input(image, None, z=2), image[:, 2])
