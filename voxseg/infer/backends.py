"""Inference backends: what runs the network on each batch of windows of the one sliding window
(:func:`voxseg.infer.sliding_window.predict_volume`).

A backend turns a network, the shape of a batch of windows and a precision into a callable
``batch (N, C, *window) float32 tensor -> (N, K, *window) float32 logits``:

- ``"torch"``: the network itself, in float32 or bf16 (:func:`inference_precision`: autocast, or a bf16 copy
  served by the memory-lean path of :mod:`voxseg.nets.lean` for large windows), on the CPU or CUDA.
- ``"openvino"`` (CPU only): the network traced once (``torch.jit.trace``, at a small window whose OpenVINO model
  is reshaped to the real one after a check against PyTorch at an intermediate shape; at the real window where
  that check fails), converted by OpenVINO's PyTorch front end, with the static shape of one window (a batch's
  windows run one after another, so the working memory is one window's), and compiled for the CPU with
  ``INFERENCE_PRECISION_HINT`` ``f32``
  or ``bf16`` and ``INFERENCE_NUM_THREADS`` = ``torch.get_num_threads()``. The converted model (OpenVINO IR,
  ``.xml`` + ``.bin``, float32 weights) is cached in the run folder, ``RUN/.cache/openvino/<key>.xml``, the key
  hashing the weights, the window shape and OpenVINO's version; files are written under a temporary name and
  renamed. A read-only run folder, or a network without one, keeps it in memory for the process. The
  conversion goes through the front end, not ``openvino.convert_model``: the latter starts OpenVINO's usage
  telemetry (``openvino-telemetry``), which sends events unless the user has opted out.
- ``"auto"``: PyTorch on CUDA; on a CPU, OpenVINO when it is installed and one window runs at least
  :data:`OPENVINO_MARGIN` times as fast there as in PyTorch (each at the same precision), else PyTorch. The
  measurement is made once per network and batch shape, and saved beside the cached model
  (``<key>-backend-<cpu>.json``, keyed on the CPU's name and the thread count).

Precision (``--precision``): ``"fp32"``, ``"bf16"``, or ``"auto"``: the run's ``amp`` setting, where ``auto``
means bf16 where PyTorch's probe measures it faster (:func:`voxseg.nets.resolve_amp`), for either backend
(OpenVINO computes bf16 only where the CPU reports it, f32 elsewhere).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from voxseg.errors import InputError
from voxseg.io.files import save_json_atomic
from voxseg.nets.device import autocast_context, resolve_amp

__all__ = ["BACKEND_NAMES", "PRECISION_NAMES", "InferenceBackend", "ValidationBackend", "inference_precision",
           "openvino_available", "require_openvino"]

BACKEND_NAMES = ("auto", "torch", "openvino")
PRECISION_NAMES = ("auto", "fp32", "bf16")
CACHE_FOLDER = Path(".cache") / "openvino"
"""Where a run folder keeps its converted networks, relative to the run (or fold) folder."""

WindowFn = Callable[[torch.Tensor], torch.Tensor]


def openvino_available() -> bool:
    """Whether the ``openvino`` package can be imported (without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def require_openvino() -> Any:
    """The ``openvino`` module, imported without its usage telemetry.

    Importing ``openvino`` imports its model-conversion tools, which start ``openvino-telemetry`` and send an
    event (to Google Analytics) unless the user has opted out (``opt_in_out --opt_out``) or a ``CI`` variable is
    set: it is opt-out, not opt-in. A scan-segmentation tool must not report home, so the first import here hides
    ``openvino_telemetry`` while ``openvino`` is imported; OpenVINO then falls back to its own telemetry stub (its
    documented behaviour when the package is absent) for the rest of the process. Where ``openvino`` was imported
    before, it is returned as it is.

    Raises:
        InputError: one line naming ``--backend``, when OpenVINO is not installed.
    """
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    hidden = sys.modules.get("openvino_telemetry", _ABSENT)
    sys.modules["openvino_telemetry"] = None  # makes ``import openvino_telemetry`` raise ImportError
    try:
        import openvino
    except ImportError:
        raise InputError("--backend", "openvino was asked for, but the openvino package is not installed: "
                                      "pip install openvino, or use --backend torch") from None
    finally:
        if hidden is _ABSENT:
            del sys.modules["openvino_telemetry"]
        else:
            sys.modules["openvino_telemetry"] = hidden
    return openvino


_ABSENT = object()


@dataclass
class InferenceBackend:
    """The backend and precision of one prediction, and the networks it has compiled so far.

    Attributes:
        name: ``"auto"``, ``"torch"`` or ``"openvino"`` (see the module's description).
        precision: ``"auto"`` (the run's ``amp``), ``"fp32"`` or ``"bf16"``.
        conversions: how many networks were traced and converted to OpenVINO by this object (not read from a
            cache): a network is converted once per window shape, never per case.
        choices: what each network class and batch shape was predicted with, e.g. ``{"UNet (2, 4, 128, 128, 128)":
            "openvino bf16"}``.
    """

    name: str = "auto"
    precision: str = "auto"
    conversions: int = 0
    choices: dict[str, str] = field(default_factory=dict)
    _runners: dict[tuple, WindowFn] = field(default_factory=dict, repr=False)
    _core: Any = field(default=None, repr=False)
    _decisions: dict[tuple, dict] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.name not in BACKEND_NAMES:
            raise InputError("--backend", f"must be one of {', '.join(BACKEND_NAMES)}, got {self.name!r}")
        if self.precision not in PRECISION_NAMES:
            raise InputError("--precision", f"must be one of {', '.join(PRECISION_NAMES)}, got {self.precision!r}")
        if self.name == "openvino":
            require_openvino()

    def amp(self, run_amp: str) -> str:
        """The ``amp`` value (``auto``, ``bf16``, ``fp16``, ``none``) this precision means for a run's ``amp``."""
        return {"fp32": "none", "bf16": "bf16"}.get(self.precision, run_amp)

    def predictor(self, model: torch.nn.Module, run_amp: str, batch_shape: tuple[int, ...], device: torch.device,
                  cache_dir: Path | None = None) -> WindowFn:
        """The window function for ``model`` on batches of shape ``batch_shape`` ``(N, C, *window)``, made
        once per network, shape and device and kept by this object (OpenVINO takes any batch up to ``N``).

        Args:
            run_amp: the run's ``amp`` setting (what ``"auto"`` precision means).
            cache_dir: the run folder's cache of converted networks (``None``: in memory only).
        """
        key = (id(model), tuple(batch_shape), str(device))
        if key not in self._runners:
            self._runners[key], self.choices[f"{type(model).__name__} {tuple(batch_shape)}"] = self._make(
                model, run_amp, tuple(batch_shape), device, cache_dir)
        return self._runners[key]

    def _make(self, model, run_amp, batch_shape, device, cache_dir) -> tuple[WindowFn, str]:
        """The window function and what it is (``"openvino bf16"``, ``"torch fp32"``)."""
        amp = self.amp(run_amp)
        if self.name == "torch" or device.type != "cpu" or (self.name == "auto" and not openvino_available()):
            return self._torch(model, amp, batch_shape, device)
        from voxseg.infer._openvino import OpenVINOWindows

        try:
            windows = OpenVINOWindows(model, batch_shape, cache_dir, self._openvino_core())
        except InputError:
            if self.name == "openvino":
                raise
            return self._torch(model, amp, batch_shape, device)  # auto: a network OpenVINO cannot take
        if windows.converted:
            self.conversions += 1
        if self.name == "openvino":
            precision = windows.choose_precision(resolve_amp(amp, device))
            return windows.compiled(precision), f"openvino {precision}"
        return self._auto(model, amp, batch_shape, device, windows)

    def _openvino_core(self):
        if self._core is None:
            self._core = require_openvino().Core()
        return self._core

    @staticmethod
    def _torch(model, amp, batch_shape, device) -> tuple[WindowFn, str]:
        net, dtype, context = inference_precision(model, amp, device, int(np.prod(batch_shape[2:])) * batch_shape[0])
        precision = {"bf16": "bf16", "fp16": "fp16"}.get(resolve_amp(amp, device), "fp32")

        def run(batch: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), context:
                return net(batch.to(device, dtype)).float()
        return run, f"torch {precision}"

    def _auto(self, model, amp, batch_shape, device, windows) -> tuple[WindowFn, str]:
        """PyTorch or OpenVINO, whichever runs one window faster: OpenVINO when it is at least
        :data:`OPENVINO_MARGIN` times as fast (a near tie keeps PyTorch, so noise does not flip the choice). The
        measurement is saved beside the cached network and shared, within this object, by every network of the
        same architecture and batch shape (the folds of an ensemble run on one backend)."""
        amp = resolve_amp(amp, device)
        architecture = (architecture_key(model), batch_shape, amp)
        decision = windows.read_decision() or self._decisions.get(architecture)
        if decision is None:
            torch_fn = self._torch(model, amp, batch_shape, device)[0]
            sample = torch.zeros((1, *batch_shape[1:]))  # one window: a batch would multiply the cost of timing
            precision = windows.choose_precision(amp)
            try:
                seconds = {"torch": _best_of(torch_fn, sample),
                           "openvino": _best_of(windows.compiled(precision), sample)}
                faster = seconds["torch"] > OPENVINO_MARGIN * seconds["openvino"]
            except RuntimeError:  # OpenVINO's CPU plugin refused to compile or run the network: PyTorch
                seconds, faster = {"torch": None, "openvino": None}, False
            decision = {"backend": "openvino" if faster else "torch", "precision": precision, "seconds": seconds}
            windows.save_decision(decision)
        self._decisions[architecture] = decision
        if decision["backend"] == "openvino":
            return windows.compiled(decision["precision"]), f"openvino {decision['precision']}"
        return self._torch(model, amp, batch_shape, device)


OPENVINO_MARGIN = 1.2
"""``auto`` takes OpenVINO when one window runs at least this many times as fast there as in PyTorch."""


@dataclass
class ValidationBackend:
    """What runs the network at each validation during training, whose weights change between validations.

    The network is converted to OpenVINO again at every validation, in memory only (nothing is written to the run
    folder). ``"torch"``: PyTorch always. ``"openvino"``: OpenVINO on a CPU. ``"auto"``: OpenVINO where it
    pays. That is measured once, at the first validation: seconds per batch in each backend, and seconds to
    convert and compile. OpenVINO is used when it is at least :data:`OPENVINO_MARGIN` times as fast, and the
    batches of one validation save more time than converting costs. Small windows seldom pass; a few
    128^3 windows do.

    Attributes:
        name: ``"auto"``, ``"torch"`` or ``"openvino"`` (the plan's ``val_backend``).
        measured: the first validation's measurement (``auto`` only): ``{"precision", "seconds": {"torch",
            "openvino", "convert"}}`` (``openvino`` None where OpenVINO refused the network).
        last: what the last validation ran on, e.g. ``"openvino bf16"`` or ``"torch fp32"``.
    """

    name: str = "auto"
    measured: dict | None = None
    last: str = ""

    def __post_init__(self) -> None:
        if self.name not in BACKEND_NAMES:
            raise InputError("--val-backend", f"must be one of {', '.join(BACKEND_NAMES)}, got {self.name!r}")

    def for_validation(self, model: torch.nn.Module, run_amp: str, batch_shape: tuple[int, ...],
                       device: torch.device, batches: int) -> InferenceBackend:
        """A fresh :class:`InferenceBackend` for one validation of ``batches`` batches of shape ``batch_shape``
        ``(N, C, *window)`` with ``model`` (in eval mode) as it is now."""
        if self.name == "torch" or device.type != "cpu" or (self.name == "auto" and not openvino_available()):
            return self._use(InferenceBackend("torch"), "torch")
        if self.name == "openvino":
            return self._use(InferenceBackend("openvino"), "openvino")
        if self.measured is None:
            self.measured = _measure_conversion(model, run_amp, batch_shape, device, batches)
        seconds = self.measured["seconds"]
        saves = None if seconds["openvino"] is None else batches * (seconds["torch"] - seconds["openvino"])
        if saves is not None and seconds["torch"] > OPENVINO_MARGIN * seconds["openvino"] \
                and saves > seconds["convert"]:
            return self._use(InferenceBackend("openvino", self.measured["precision"]), "openvino")
        return self._use(InferenceBackend("torch"), "torch")

    def _use(self, backend: InferenceBackend, name: str) -> InferenceBackend:
        self.last = name
        return backend


def _measure_conversion(model: torch.nn.Module, run_amp: str, batch_shape: tuple[int, ...],
                        device: torch.device, batches: int) -> dict:
    """Seconds per batch of ``batch_shape`` in PyTorch and in OpenVINO, and seconds to convert and compile the
    network (in memory), at the precision ``run_amp`` resolves to (:class:`ValidationBackend`). Where the
    ``batches`` of a validation take less in PyTorch than converting ever costs (:data:`_CONVERSION_FLOOR_S`),
    OpenVINO is not tried (``openvino`` and ``convert`` None)."""
    from voxseg.infer._openvino import OpenVINOWindows

    amp = resolve_amp(run_amp, device)
    sample = torch.zeros(batch_shape)
    torch_fn = InferenceBackend._torch(model, amp, batch_shape, device)[0]
    torch_fn(sample)  # one-time setup
    start = time.perf_counter()
    torch_fn(sample)
    seconds: dict[str, float | None] = {"torch": time.perf_counter() - start, "openvino": None, "convert": None}
    precision = "fp32"
    if batches * seconds["torch"] < _CONVERSION_FLOOR_S:
        return {"precision": precision, "seconds": seconds}
    seconds["torch"] = _best_of(torch_fn, sample)
    start = time.perf_counter()
    try:
        windows = OpenVINOWindows(model, batch_shape, None, require_openvino().Core())
        precision = windows.choose_precision(amp)
        run = windows.compiled(precision)
        seconds["convert"] = time.perf_counter() - start
        seconds["openvino"] = _best_of(run, sample)
    except (InputError, RuntimeError):  # OpenVINO refused the network: PyTorch
        pass
    return {"precision": precision, "seconds": seconds}


_CONVERSION_FLOOR_S = 0.5
"""Seconds that converting and compiling a network for OpenVINO takes at the least (a 4-wide 3-level U-Net on
two cores): a validation that takes less in PyTorch cannot gain from OpenVINO."""


def _best_of(fn: WindowFn, sample: torch.Tensor, min_seconds: float = 0.5) -> float:
    """Seconds of the fastest call of ``fn`` on ``sample``, after one untimed call (one-time setup), repeated
    until ``min_seconds`` have passed (at most 100 calls): a large window is timed once, a window of milliseconds
    many times, so that both are timed steadily."""
    fn(sample)
    best, total, calls = float("inf"), 0.0, 0
    while calls < 1 or (total < min_seconds and calls < 100):
        start = time.perf_counter()
        fn(sample)
        elapsed = time.perf_counter() - start
        best, total, calls = min(best, elapsed), total + elapsed, calls + 1
    return best


def architecture_key(model: torch.nn.Module) -> str:
    """A short hex digest of the network's class and its tensors' names, dtypes and shapes (not their values):
    networks with the same key run at the same speed."""
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
    return digest.hexdigest()[:24]


def inference_precision(model: torch.nn.Module, amp: str, device: torch.device, window_voxels: int = 0
                        ) -> tuple[torch.nn.Module, torch.dtype, contextlib.AbstractContextManager]:
    """The network, input dtype and context to predict with at the precision ``amp`` resolves to
    (:func:`voxseg.nets.resolve_amp`: fp16 autocast on CUDA, bf16 on a CPU where it measures faster).

    bf16 on a CPU, for a model in eval mode whose first-stage activation of one batch of windows
    (``window_voxels`` = voxels of a window times windows per pass) is large: a bf16 copy of the model, run
    without autocast, so the memory-lean path (``voxseg.nets.lean``: slabbed convolutions, in-place norms)
    serves it; autocast would take the plain path, which is faster for small activations. Normalisation layers
    keep float32 parameters and statistics (summed in float64 on the lean path). Otherwise (CUDA included): the
    model itself, float32 input and :func:`voxseg.nets.autocast_context`.
    """
    if (resolve_amp(amp, device) == "bf16" and device.type == "cpu" and not model.training
            and window_voxels * _first_width(model) * 2 >= _BF16_COPY_MIN_BYTES):
        return _bf16_copy(model), torch.bfloat16, contextlib.nullcontext()
    return model, torch.float32, autocast_context(amp, device)


_BF16_COPY_MIN_BYTES = 40 * 2**20
"""bf16 bytes of the first stage's activation from which the bf16 copy beats autocast on a CPU (between base 16
at 96^3, where autocast is faster, and base 32 at 96^3, where the copy is; :func:`inference_precision`)."""


def _first_width(model: torch.nn.Module) -> int:
    """Output channels of the model's first convolution (its full-resolution width)."""
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)), None)
    return conv.out_channels if conv is not None else 0


_FLOAT32_LAYERS = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)


def _bf16_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose weights are bf16, but for the normalisation layers: their affine parameters and
    running statistics stay float32 (torch's norms take bf16 input with float32 parameters), as autocast keeps
    them."""
    net = copy.deepcopy(model)
    for module in net.modules():
        if isinstance(module, _FLOAT32_LAYERS):
            continue
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor is not None and tensor.is_floating_point():
                tensor.data = tensor.data.to(torch.bfloat16)
    return net


def weights_key(model: torch.nn.Module, *extra: object) -> str:
    """A short hex digest of the network's class, its weights (names, dtypes, shapes, values) and ``extra``."""
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        tensor = tensor.detach().cpu().contiguous().reshape(-1)  # 0-dim tensors (num_batches_tracked) too
        digest.update(f"{name}:{tensor.dtype}:{shape}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    digest.update(json.dumps([str(e) for e in extra]).encode())
    return digest.hexdigest()[:24]


def writable_folder(folder: Path | None) -> Path | None:
    """``folder`` (created) when files can be written there, else ``None``."""
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def save_decision(path: Path, decision: dict) -> None:
    """Write a backend decision (JSON) atomically; a folder that refuses it keeps it in memory only."""
    with contextlib.suppress(OSError):
        save_json_atomic(decision, path)
