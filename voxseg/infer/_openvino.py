"""OpenVINO on the CPU for :mod:`voxseg.infer.backends`: one network and batch shape, traced (at a small window)
and converted once (or read from the run folder's cache), compiled per precision."""
from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxseg.errors import InputError
from voxseg.infer.backends import CACHE_FOLDER, require_openvino, save_decision, weights_key, writable_folder

_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def trace_network(model: torch.nn.Module, batch_shape: tuple[int, ...]) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``model`` (eval mode) on zeros of shape ``(1, *batch_shape[1:])`` (the plain
    forward pass: the memory-lean path steps aside while tracing)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants (fixed window)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.10+ says torch.jit.trace is deprecated
        return torch.jit.trace(model.eval(), torch.zeros((1, *batch_shape[1:])), check_trace=False)


def convert_network(model: torch.nn.Module, batch_shape: tuple[int, ...]) -> Any:
    """The network as an OpenVINO model with the static input shape of one window, ``(1, *batch_shape[1:])``,
    through OpenVINO's PyTorch front end.

    Tracing runs the plain forward pass, whose memory at a large window exceeds what prediction needs, so the
    network is traced at a small window (twice ``model.size_divisor`` along each axis, at most the window) and the
    OpenVINO model reshaped to the window. That holds only where the traced graph does not bake the input's shape
    in: the reshaped model is first checked against PyTorch at a second, intermediate shape (three times the
    divisor, fp32, :func:`_matches_torch`), and a network that fails the check, or has no ``size_divisor``, is
    traced at the window itself."""
    require_openvino()  # first, so that importing the front end starts no telemetry
    window = (1, *batch_shape[1:])
    divisor = getattr(model, "size_divisor", None)
    if divisor is not None and len(divisor) == len(window) - 2:
        small = (*window[:2], *(min(2 * d, size) for d, size in zip(divisor, window[2:])))
        middle = (*window[:2], *(min(3 * d, size) for d, size in zip(divisor, window[2:])))
        if small != window:
            try:
                ov_model = _convert_traced(model, small)
                if _matches_torch(ov_model, model, middle):
                    ov_model.reshape({0: list(window)})
                    return ov_model
            except Exception:  # noqa: BLE001 - the small graph cannot take another shape: trace at the window
                pass
    ov_model = _convert_traced(model, window)
    ov_model.reshape({0: list(window)})
    return ov_model


def _convert_traced(model: torch.nn.Module, shape: tuple[int, ...]) -> Any:
    """The network traced at input ``shape`` ``(1, C, *spatial)`` and converted by OpenVINO's PyTorch front end."""
    from openvino.frontend import FrontEndManager
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    front_end = FrontEndManager().load_by_framework("pytorch")
    decoder = TorchScriptPythonDecoder(trace_network(model, shape))  # held: the front end calls back into it
    return front_end.convert(front_end.load(decoder))


def _matches_torch(ov_model: Any, model: torch.nn.Module, shape: tuple[int, ...], tolerance: float = 1e-3) -> bool:
    """Whether ``ov_model``, reshaped to ``shape`` ``(1, C, *spatial)`` and compiled in f32, gives the network's
    float32 logits on a seeded random input of that shape, within ``tolerance`` (relative, and absolute scaled by
    the largest logit)."""
    openvino = require_openvino()
    ov_model.reshape({0: list(shape)})
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.eval()(x)
    if not isinstance(expected, torch.Tensor):
        return False
    expected = expected.float().numpy()
    compiled = openvino.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                               "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    got = np.asarray(compiled([x.numpy()])[0])
    return got.shape == expected.shape and bool(np.allclose(
        got, expected, rtol=tolerance, atol=tolerance * max(1.0, float(np.abs(expected).max()))))


class OpenVINOWindows:
    """One network and batch shape in OpenVINO: its model (converted now, or read from ``cache_dir``), compiled
    per precision on first use.

    Attributes:
        key: the cache key (weights, window shape, OpenVINO version).
        converted: whether the network was traced and converted here (not read from the cache).
    """

    def __init__(self, model: torch.nn.Module, batch_shape: tuple[int, ...], cache_dir: Path | None, core: Any):
        openvino = require_openvino()
        self.core, self.batch_shape = core, tuple(batch_shape)
        self.key = weights_key(model, (1, *self.batch_shape[1:]), openvino.__version__)  # compiled for one window
        self.folder = writable_folder(cache_dir / CACHE_FOLDER) if cache_dir is not None else None
        self._compiled: dict[str, Any] = {}
        xml = self.folder / f"{self.key}.xml" if self.folder else None
        self.converted = True
        if xml is not None and xml.exists() and xml.with_suffix(".bin").exists():
            try:
                self.model, self.converted = core.read_model(str(xml)), False
                return
            except RuntimeError:  # an unreadable cache file: convert again, and replace it
                pass
        try:
            self.model = convert_network(model, self.batch_shape)
        except Exception as exc:  # the tracer or the converter refused an operation of this network
            raise InputError("--backend", f"OpenVINO could not convert the network ({type(exc).__name__}: "
                                          f"{str(exc).splitlines()[0] if str(exc) else ''}); use --backend torch") from None
        if self.folder is not None:
            self._save(openvino)

    def _save(self, openvino) -> None:
        """Save the IR under temporary names, then rename the weights and, last, the ``.xml`` (readers look for
        it); a folder that refuses the files leaves the model in memory only."""
        tmp = self.folder / f".{self.key}.{os.getpid()}.tmp.xml"
        try:
            openvino.save_model(self.model, str(tmp), compress_to_fp16=False)
            os.replace(tmp.with_suffix(".bin"), self.folder / f"{self.key}.bin")
            os.replace(tmp, self.folder / f"{self.key}.xml")
        except OSError:
            for path in (tmp, tmp.with_suffix(".bin")):
                path.unlink(missing_ok=True)

    def choose_precision(self, amp: str) -> str:
        """``"fp32"`` or ``"bf16"`` for the resolved ``amp`` setting (``"bf16"`` or not): bf16 only where the CPU
        reports it (elsewhere OpenVINO would compute in f32 anyway)."""
        return "bf16" if amp == "bf16" and "BF16" in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") \
            else "fp32"

    def compiled(self, precision: str):
        """The window function at ``precision`` (``"fp32"`` or ``"bf16"``): ``(n, C, *window)`` float32 tensor ->
        ``(n, K, *window)`` float32 logits, any ``n``: the network is compiled for one window and runs the
        windows of a batch one after another, so its working memory is one window's (a CPU gains little from
        batching windows this large)."""
        if precision not in self._compiled:
            config = {"INFERENCE_PRECISION_HINT": _OV_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY",
                      "INFERENCE_NUM_THREADS": torch.get_num_threads()}
            self._compiled[precision] = self.core.compile_model(self.model, "CPU", config)
        request = self._compiled[precision].create_infer_request()

        def run(batch: torch.Tensor) -> torch.Tensor:
            x = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
            outputs = []
            for window in x:
                request.infer([window[None]])
                outputs.append(np.array(request.get_output_tensor(0).data, np.float32))
            return torch.from_numpy(np.concatenate(outputs))
        return run

    def _decision_path(self, kind: str) -> Path | None:
        cpu = self.core.get_property("CPU", "FULL_DEVICE_NAME")
        tag = weights_key(torch.nn.Module(), cpu, platform.machine(), torch.get_num_threads(), kind)[:12]
        return self.folder / f"{self.key}-{kind}-{tag}.json" if self.folder is not None else None

    def read_decision(self, kind: str = "backend") -> dict | None:
        """A saved measurement for this CPU and thread count (``None``: none saved, or unreadable)."""
        import json

        path = self._decision_path(kind)
        if path is None or not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def save_decision(self, decision: dict, kind: str = "backend") -> None:
        """Save a measurement beside the cached network (nothing without a writable cache folder)."""
        path = self._decision_path(kind)
        if path is not None:
            save_decision(path, decision)
