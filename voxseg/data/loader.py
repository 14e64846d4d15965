"""Batches for training, made ahead of time by worker processes so the model never waits for data.

Batch ``i`` is a pure function of ``(seed, i)``: its generator is ``default_rng([seed, 0, i])``,
whichever process makes it and whenever. So ``num_workers=0`` (in-process) and any number of
workers give the same sequence, and resuming at batch ``i`` continues it exactly. (The worker id is
deliberately not part of the seed: it would make batches depend on the worker count.)

Workers are forked processes: the case arrays are shared copy-on-write, never pickled. Each worker
``w`` makes batches ``start + w, start + w + W, ...`` into its own ring of ``prefetch`` slots of
shared memory (anonymous ``mmap``), and passes only ``(batch index, slot)`` through a queue; the
consumer copies the slot out and hands it back.
"""
from __future__ import annotations

import math
import mmap
import multiprocessing as mp
import os
import queue
import time
import traceback
from typing import Sequence

import numpy as np
import torch

from voxseg.data.augment import Augmenter
from voxseg.data.augment.resample import crop_window
from voxseg.data.network_input import network_input
from voxseg.data.sampling import PatchSampler, select_slices

__all__ = ["PatchLoader"]

_MODES = ("3d", "2d", "2.5d")
_POLL_SECONDS = 0.2


def _shared_array(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A zeroed array in anonymous shared memory, visible to processes forked afterwards."""
    nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
    buf = mmap.mmap(-1, nbytes)  # MAP_SHARED | MAP_ANONYMOUS: survives fork as shared, freed with the last user
    return np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


class PatchLoader:
    """Iterator of training batches ``(x (B, C, *patch) float32, y (B, *patch))`` as numpy arrays.

    Each batch draws a case uniformly per item; the first ``round(B * foreground_fraction)`` items
    (at least 1 when the fraction is positive) are centred on foreground, as nnU-Net does.

    Args:
        cases: ``[(image (C, Z, Y, X) float32, label (Z, Y, X) int), ...]``, all with the same ``C``.
        patch_size: ``(pz, py, px)`` voxels for ``mode="3d"``; ``(py, px)`` for ``"2d"`` / ``"2.5d"``.
        batch_size: items per batch.
        foreground_fraction: share of forced-foreground items per batch.
        augment: applied to every item while it is cut from the volume, or ``None`` (plain crops).
        num_workers: worker processes; 0 makes batches in the calling process (same batches).
        prefetch: batches each worker may have ready ahead of the consumer.
        seed: seed of the batch sequence.
        mode: ``"3d"`` patches, ``"2d"`` slices, ``"2.5d"`` stacks of ``slices`` neighbours as
            channels (``x`` is ``(B, C * slices, py, px)``, ``y`` the centre slice ``(B, py, px)``).
            In 2-D / 2.5-D the augmentation is 2-D (the same in-plane transform for every slice of a
            stack; per-channel intensity draws treat each stacked slice as its own channel).
        slices: slices per 2.5-D stack (odd).
        slice_selection: for 2-D / 2.5-D, restrict random slices to those with foreground plus this
            many empty neighbours (Wang & Tang 2020, :func:`~voxseg.data.sampling.select_slices`); ``None`` = all.
        channels: indices of the channels to keep (a modality subset); ``None`` = all.
        num_batches: stop after this many batches in total; ``None`` = endless.
        max_voxels_per_class: foreground coordinates kept per class and case (see ``PatchSampler``).
        overhang: how far patches may reach beyond the volume, a fraction of the patch (see ``PatchSampler``).

    Attributes:
        cases: the cases as kept, ``[(image (C', Z, Y, X) float32, label), ...]`` with the channel subset
            applied: a view of the given image where the subset allows (a memory-mapped case stays mapped).
        wait_seconds: total time the consumer spent blocked in ``next()`` (seconds).
    """

    def __init__(
        self,
        cases: Sequence[tuple[np.ndarray, np.ndarray]],
        patch_size: Sequence[int],
        batch_size: int = 2,
        foreground_fraction: float = 1 / 3,
        augment: Augmenter | None = None,
        num_workers: int = 1,
        prefetch: int = 2,
        seed: int = 0,
        mode: str = "3d",
        slices: int = 3,
        slice_selection: int | None = None,
        channels: Sequence[int] | None = None,
        num_batches: int | None = None,
        max_voxels_per_class: int = 10_000,
        overhang: float = 0.0,
    ):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if not cases:
            raise ValueError("cases is empty")
        if batch_size < 1 or num_workers < 0 or prefetch < 1:
            raise ValueError(f"need batch_size >= 1, num_workers >= 0, prefetch >= 1; got {batch_size}, "
                             f"{num_workers}, {prefetch}")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        patch = tuple(int(p) for p in patch_size)
        if len(patch) != (3 if mode == "3d" else 2):
            raise ValueError(f"mode {mode!r} needs a {'3' if mode == '3d' else '2'}-D patch_size, got {patch}")
        if mode == "2.5d" and (slices < 1 or slices % 2 == 0):
            raise ValueError(f"slices must be odd, got {slices}")
        self.cases = []
        for image, label in cases:
            # The channel subset once per case, before the workers fork: a view for consecutive channels, so a
            # memory-mapped case stays mapped, else one copy (the slices are stacked per item, below).
            image = network_input(np.asarray(image), channels)
            self.cases.append((np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label)))
        n_channels = {img.shape[0] for img, _ in self.cases}
        if len(n_channels) != 1:
            raise ValueError(f"cases have different channel counts {sorted(n_channels)}")
        self.patch_size = patch
        self.batch_size = int(batch_size)
        self.foreground_fraction = float(foreground_fraction)
        self.augment = augment
        self.num_workers = int(num_workers)
        self.prefetch = int(prefetch)
        self.seed = int(seed)
        self.mode = mode
        self.slices = int(slices)
        self.num_batches = num_batches
        sampler_patch = patch if mode == "3d" else (1,) + patch
        self._samplers = []
        for i, (image, label) in enumerate(self.cases):
            chosen = select_slices(label, slice_selection) if (slice_selection is not None and mode != "3d") else None
            self._samplers.append(PatchSampler(image, label, sampler_patch, self.foreground_fraction,
                                               rng=np.random.default_rng([self.seed, 7919, i]),
                                               max_voxels_per_class=max_voxels_per_class, slices=chosen,
                                               overhang=overhang))
        c = n_channels.pop() * (self.slices if mode == "2.5d" else 1)
        self.x_shape = (self.batch_size, c) + patch
        self.y_shape = (self.batch_size,) + patch
        self.y_dtype = np.result_type(*[lbl.dtype for _, lbl in self.cases])
        ff = self.foreground_fraction
        self._n_fg = 0 if ff == 0 else min(self.batch_size, max(1, math.floor(self.batch_size * ff + 0.5)))
        self._next = 0
        self.wait_seconds = 0.0
        self._procs: list = []

    # ------------------------------------------------------------------ batch making (any process)

    def make_batch(self, index: int, x: np.ndarray | None = None, y: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Batch number ``index`` of the sequence, made in the calling process (into ``x``/``y`` if given)."""
        x = np.empty(self.x_shape, np.float32) if x is None else x
        y = np.empty(self.y_shape, self.y_dtype) if y is None else y
        rng = np.random.default_rng([self.seed, 0, int(index)])
        for b in range(self.batch_size):
            ci = int(rng.integers(len(self.cases)))
            image, label = self.cases[ci]
            start = self._samplers[ci].sample_start(b < self._n_fg, rng)
            if self.mode == "3d":
                vol_img, vol_lbl, start = image, label, start
            else:
                z = start[0]
                vol_img = network_input(image, slices=self.slices if self.mode == "2.5d" else 1, z=z)
                vol_lbl, start = label[z], start[1:]
            if self.augment is None:
                x[b] = crop_window(vol_img, start, self.patch_size)
                y[b] = crop_window(vol_lbl, start, self.patch_size)
            else:
                centre = [s + (p - 1) / 2.0 for s, p in zip(start, self.patch_size)]
                x[b], y[b] = self.augment.extract(vol_img, vol_lbl, centre, self.patch_size, rng)
        return x, y

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> "PatchLoader":
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        if self.num_batches is not None and self._next >= self.num_batches:
            raise StopIteration
        t0 = time.perf_counter()
        if self.num_workers == 0:
            out = self.make_batch(self._next)
        else:
            if not self._procs:
                self._start_workers()
            out = self._receive(self._next)
        self.wait_seconds += time.perf_counter() - t0
        self._next += 1
        return out

    def _start_workers(self) -> None:
        ctx = mp.get_context("fork")  # copy-on-write sharing of the case arrays; nothing is pickled
        self._owner_pid = os.getpid()
        self._stop = ctx.Event()
        self._start_index = self._next
        self._slots, self._free, self._ready, self._procs = [], [], [], []
        for w in range(self.num_workers):
            slots = [(_shared_array(self.x_shape, np.float32), _shared_array(self.y_shape, self.y_dtype))
                     for _ in range(self.prefetch)]
            free, ready = ctx.Queue(), ctx.Queue()
            for s in range(self.prefetch):
                free.put(s)
            self._slots.append(slots)
            self._free.append(free)
            self._ready.append(ready)
        for w in range(self.num_workers):
            proc = ctx.Process(target=self._worker, args=(w,), daemon=True, name=f"voxseg-loader-{w}")
            proc.start()
            self._procs.append(proc)

    def _worker(self, w: int) -> None:
        torch.set_num_threads(1)  # one core per worker; the model owns the others
        free, ready = self._free[w], self._ready[w]
        index = self._start_index + w
        try:
            while not self._stop.is_set():
                if self.num_batches is not None and index >= self.num_batches:
                    return
                try:
                    slot = free.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                x, y = self._slots[w][slot]
                self.make_batch(index, x, y)
                ready.put((index, slot, None))
                index += self.num_workers
        except BaseException:  # report, the consumer raises it
            ready.put((index, -1, traceback.format_exc()))

    def _receive(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        w = (index - self._start_index) % self.num_workers
        while True:
            try:
                got, slot, error = self._ready[w].get(timeout=_POLL_SECONDS)
                break
            except queue.Empty:
                if not self._procs[w].is_alive() and self._ready[w].empty():  # exited: its messages are flushed
                    raise RuntimeError(f"loader worker {w} died (exit code {self._procs[w].exitcode})") from None
        if error is not None:
            self.close()
            raise RuntimeError(f"loader worker {w} failed on batch {got}:\n{error}")
        if got != index:
            raise RuntimeError(f"loader out of order: expected batch {index}, worker {w} sent {got}")
        x, y = self._slots[w][slot]
        out = (x.copy(), y.copy())
        self._free[w].put(slot)
        return out

    # ------------------------------------------------------------------ lifecycle and state

    def close(self) -> None:
        """Stop and reap the workers (safe to call twice; iteration can restart afterwards)."""
        if not self._procs or os.getpid() != self._owner_pid:  # a forked worker never stops its siblings
            return
        self._stop.set()
        for proc in self._procs:
            proc.join(timeout=5.0)
            if proc.is_alive():  # stuck in a long batch: it holds no resource we need
                proc.terminate()
                proc.join(timeout=5.0)
        for q in self._free + self._ready:
            q.cancel_join_thread()
            q.close()
        self._procs, self._slots, self._free, self._ready = [], [], [], []

    def __enter__(self) -> "PatchLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def state_dict(self) -> dict:
        """``{"next_batch": i, "seed": s}``: enough to continue the same batch sequence."""
        return {"next_batch": self._next, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state["next_batch"]`` (running workers are restarted there)."""
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"state is for seed {state['seed']}, this loader has seed {self.seed}")
        self.close()
        self._next = int(state["next_batch"])
