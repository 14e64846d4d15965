"""Model packages: a trained run as one portable file (``voxseg export``), read without running code from it.

A package is a zip file (or the folder it unpacks to) that mirrors the parts of a run folder prediction needs::

    manifest.json                       format, format version, voxseg version, and every other member with
                                        its size (bytes) and sha256
    plan.json, fingerprint.json, dataset.json, split.json | splits.json, postprocessing.json (when the run
    chose post-processing), labels.json (label values and names), model_card.md, model_card.json
    checkpoint_{best,last,swa}.safetensors          the network weights of a single run, or, of a k-fold run,
    fold_<k>/plan.json, fold_<k>/split.json, fold_<k>/checkpoint_*.safetensors

Weights are ``safetensors`` files: tensors only, no code, so loading a package never runs anything from it
(unlike a pickle). :func:`open_package` reads every member into memory and checks it against the manifest
before anything is used (:mod:`voxseg.infer.package_files`: the manifest, the member names, the zip and folder
checks); anything that is not what the manifest declares is an :class:`~voxseg.errors.InputError` naming the
package. Weights that do not fit the plan's network (strict ``load_state_dict``) are refused the same way.

The manifest's ``kind`` says what the package holds: ``"voxseg-run"`` (the layout above; a manifest without
``kind`` is one) or ``"nnunet"`` (an nnU-Net v2 trained model, format version 2, read by
:mod:`voxseg.infer.nnunet.package`)::

    plans.json, dataset.json            nnU-Net's own, byte for byte
    nnunet.json                         configuration, trainer, and per fold the checkpoint's plain values
                                        prediction needs (allowed mirroring axes, tensors that share memory)
    model_card.md, model_card.json
    fold_<f>/checkpoint_{final,best,latest}.safetensors    one fold's network weights (``f``: a number or all)
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from voxseg.config import RunPlan
from voxseg.data.fingerprint import DatasetFingerprint
from voxseg.errors import InputError
from voxseg.infer.model_files import checkpoint_path, read_model_weights
from voxseg.infer.package_files import (MANIFEST_NAME, MAX_MEMBER_BYTES, PACKAGE_FORMAT, PACKAGE_FORMAT_VERSION,
                                        PACKAGE_KINDS, is_package, package_kind, package_member_allowed,
                                        read_package_members, weights_name, write_package_zip)
from voxseg.infer.postprocess import PostRule
from voxseg.nets.build import build_model

__all__ = ["PACKAGE_FORMAT", "PACKAGE_FORMAT_VERSION", "PACKAGE_KINDS", "MANIFEST_NAME", "MAX_MEMBER_BYTES",
           "ModelPackage", "is_package", "open_package", "package_kind", "package_member_allowed", "weights_name",
           "write_package_zip", "source_plan", "source_weights"]


@dataclass(frozen=True)
class ModelPackage:
    """A checked package: its manifest and every member's bytes.

    Attributes:
        path: the zip file or folder it was read from (named in every message).
        manifest: ``manifest.json`` as read.
        members: member name -> content, each checked against the manifest.
    """

    path: Path
    manifest: dict
    members: dict[str, bytes]

    @property
    def kind(self) -> str:
        """``"voxseg-run"`` or ``"nnunet"`` (see the module docstring)."""
        return self.manifest.get("kind", "voxseg-run")

    def json(self, name: str) -> Any:
        """A JSON member, parsed."""
        try:
            return json.loads(self.members[name])
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(self.path, f"member {name} is not valid JSON ({exc})") from None

    def model_prefixes(self, folds: str | Sequence[int] | None = None) -> list[str]:
        """The models to use, as member prefixes (``""``: the run's own, ``"fold_<k>/"``), chosen from ``folds``
        as :func:`voxseg.infer.member_dirs` chooses from a run folder."""
        if self.kind != "voxseg-run":
            raise InputError(self.path, f"an {self.kind} model package, not a voxseg run: 'voxseg predict' runs it; "
                                        "it cannot start training or join a voxseg ensemble")
        fold_numbers = sorted({int(n.split("/")[0][5:]) for n in self.members if n.startswith("fold_")
                               and n.endswith("/plan.json")})
        has_root = any(weights_name(k) in self.members for k in ("best", "last", "swa"))
        if folds is None:
            if has_root or not fold_numbers:
                return [""]
            return [f"fold_{k}/" for k in fold_numbers]
        if not fold_numbers:
            raise InputError(self.path, "--folds was given but the package holds no fold models")
        if folds == "all":
            return [f"fold_{k}/" for k in fold_numbers]
        try:
            wanted = [int(f) for f in (folds.split(",") if isinstance(folds, str) else folds)]
        except ValueError:
            raise InputError(self.path, f"--folds must be 'all' or fold numbers such as 0,2; got {folds!r}") from None
        missing = [f for f in wanted if f not in fold_numbers]
        if missing:
            raise InputError(self.path, f"folds {missing} not in the package; it holds folds "
                                        f"{', '.join(map(str, fold_numbers))}")
        return [f"fold_{k}/" for k in wanted]

    def plan(self, prefix: str = "") -> RunPlan:
        """The plan of the model at ``prefix``."""
        name = f"{prefix}plan.json"
        if name not in self.members:
            raise InputError(self.path, f"missing member {name}")
        try:
            return RunPlan.from_dict(self.json(name))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(self.path, f"member {name} is not a valid run plan ({exc})") from None

    def weights(self, prefix: str = "", which: str = "best") -> tuple[dict[str, torch.Tensor], str]:
        """The state dict of checkpoint ``which`` of the model at ``prefix``, and its member name. ``best`` falls
        back (with a warning) to the one checkpoint the package holds when it holds no best one."""
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        held = [k for k in ("best", "last", "swa") if weights_name(k, prefix) in self.members]
        if which not in held:
            if which != "best" or not held:
                raise InputError(self.path, f"holds no {which} weights for {prefix or 'its model'} (it holds: "
                                            f"{', '.join(held) or 'none'}); export the run with --checkpoint {which}")
            warnings.warn(f"{self.path}: no best weights in the package: using its {held[0]} weights", stacklevel=2)
            which = held[0]
        name = weights_name(which, prefix)
        try:
            return load_safetensors(self.members[name]), name
        except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
            raise InputError(self.path, f"member {name} is not a readable safetensors file ({exc})") from None

    def load_model(self, prefix: str = "", which: str = "best", device: torch.device | str = "cpu"
                   ) -> tuple[torch.nn.Module, RunPlan]:
        """The network at ``prefix`` built from its plan, its weights loaded strictly, in eval mode, on ``device``."""
        plan = self.plan(prefix)
        model = build_model(plan)
        state, name = self.weights(prefix, which)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            lines = str(exc).splitlines()
            detail = lines[1].strip() if len(lines) > 1 else str(exc)
            raise InputError(self.path, f"member {name} does not fit the network in {prefix}plan.json "
                                        f"({detail})") from None
        return model.to(torch.device(device)).eval(), plan

    def fingerprint(self, prefix: str = "") -> DatasetFingerprint | None:
        """The training cases' fingerprint (the model's own, else the package's), or None."""
        for name in (f"{prefix}fingerprint.json", "fingerprint.json"):
            if name in self.members:
                return DatasetFingerprint.from_dict(self.json(name))
        return None

    def postprocessing(self) -> list[PostRule] | None:
        """The post-processing rules the run chose, or None."""
        if "postprocessing.json" not in self.members:
            return None
        try:
            return [PostRule.from_dict(r) for r in self.json("postprocessing.json")["rules"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(self.path, f"member postprocessing.json: unreadable post-processing rules: {exc}") from None

    def source(self, prefix: str = "") -> Path:
        """How the model at ``prefix`` is named in messages."""
        return self.path / prefix.rstrip("/") if prefix else self.path

def open_package(path: str | Path) -> ModelPackage:
    """Read and check a package (a zip file or an unpacked folder): :func:`read_package_members`, whose module
    (:mod:`voxseg.infer.package_files`) says what is refused.

    Raises:
        InputError: naming ``path``, for anything in it that is not what its manifest declares.
    """
    return ModelPackage(Path(path), *read_package_members(path))


def source_plan(source: str | Path) -> RunPlan | None:
    """The plan of a ``--init-from`` source (a run folder or a package; a package's first model), or None for a
    folder without plan.json."""
    source = Path(source)
    if is_package(source):
        package = open_package(source)
        return package.plan(package.model_prefixes()[0])
    return RunPlan.load(source / "plan.json") if (source / "plan.json").exists() else None


def source_weights(source: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The weights a ``--init-from`` source gives (a run folder's best checkpoint, or a package's first model's
    best weights), and a name for them in messages; read without running code."""
    source = Path(source)
    if is_package(source):
        package = open_package(source)
        prefix = package.model_prefixes()[0]
        state, name = package.weights(prefix, "best")
        return state, f"{source}:{name}"
    path = checkpoint_path(source, "best")
    return read_model_weights(path), str(path)
