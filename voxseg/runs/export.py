"""``voxseg export RUN OUT.zip``: a run folder, or an nnU-Net v2 trained-model folder, as one portable model
package (the format: :mod:`voxseg.infer.package`).

The package holds the run's ``plan.json``, fingerprint, split(s), post-processing rules, a dataset description
(layout, channels, labels, case ids), ``labels.json``, the chosen checkpoints' network weights as ``safetensors``
(per fold for a k-fold run), a model card (``model_card.md`` and ``model_card.json``) and ``manifest.json``
(format version, each member's size and sha256). Every set of weights is checked to fit the plan's network before
it is written; the zip is written to a temporary name and renamed.

A package names none of the trainer's files: each plan's ``dataset`` (the folder trained on) is reduced to the
folder's name, the model card's training commands have every path reduced to its last part
(:func:`voxseg.runs.model_card.command_without_paths`), and any remaining text member that holds the run folder's
or the dataset's absolute path has it replaced by the folder's name.

An nnU-Net model folder becomes a package of kind ``nnunet`` (:func:`export_nnunet_package`): its ``plans.json``
and ``dataset.json``, each chosen fold's network weights as safetensors, ``nnunet.json`` (configuration, trainer,
the allowed mirroring axes; :mod:`voxseg.infer.nnunet.package`) and a model card naming the folder by its name
only.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePath
from typing import Callable, Sequence

import torch

from voxseg import __version__
from voxseg.config import RunPlan
from voxseg.errors import InputError
from voxseg.infer.ensemble import member_dirs
from voxseg.infer.model_files import checkpoint_path, read_checkpoint_file
from voxseg.infer.package import weights_name, write_package_zip
from voxseg.io.files import write_atomic
from voxseg.nets.build import build_model
from voxseg.runs.model_card import model_card, model_card_markdown

__all__ = ["export_nnunet_package", "export_package"]

_COPIED = ("plan.json", "fingerprint.json", "split.json", "splits.json", "postprocessing.json")


def export_package(run_dir: str | Path, out_zip: str | Path, checkpoints: Sequence[str] = ("best",),
                   folds: str | Sequence[int] | None = None, log: Callable[[str], None] = print) -> Path:
    """Write the package of ``run_dir`` to ``out_zip``.

    Args:
        run_dir: a trained run folder (a single run, or a k-fold run with ``fold_*/``), or an nnU-Net model
            folder (written by :func:`export_nnunet_package`, ``checkpoints`` one of ``best``, ``final``, ``last``).
        out_zip: the package file to write (a ``.zip`` name in an existing folder; replaced atomically if it
            exists).
        checkpoints: which weights, any of ``best`` (falls back to ``last``, with a warning, when the run kept
            no best), ``last``, ``swa``.
        folds: as ``voxseg predict --folds``: ``None`` (the run's own model, or all its folds), ``"all"``,
            ``"0,2"`` or fold numbers.
        log: called with one line saying what was written.

    Returns:
        ``out_zip``.

    Raises:
        InputError: not a run folder, ``folds`` given for a run without folds, a checkpoint missing or
            unreadable or not fitting the plan, an output that is not a ``.zip`` name, is a folder, or whose folder
            does not exist.
    """
    from voxseg.infer.nnunet import is_nnunet_model_folder

    run_dir, out_zip = Path(run_dir), Path(out_zip)
    _check_paths(run_dir, out_zip)
    if is_nnunet_model_folder(run_dir):
        if len(set(checkpoints)) != 1:
            raise InputError(run_dir, "give one --checkpoint (best, final or last) for an nnU-Net model folder")
        return export_nnunet_package(run_dir, out_zip, checkpoints[0], folds, log)
    if not (run_dir / "plan.json").exists():
        raise InputError(run_dir, "not a voxseg run folder (no plan.json); train one with 'voxseg train'")
    if "final" in checkpoints:
        raise InputError(run_dir, "--checkpoint final is for nnU-Net model folders; a voxseg run has best, last, swa")
    plan = RunPlan.load(run_dir / "plan.json")
    members = {name: _plan_bytes(run_dir / name) if name == "plan.json" else (run_dir / name).read_bytes()
               for name in _COPIED if (run_dir / name).exists()}
    members["dataset.json"] = _dataset_description(run_dir)
    members["labels.json"] = _json_bytes({"label_values": plan.label_values, "label_names": plan.label_names,
                                          "label_scheme": plan.label_scheme, "label_regions": plan.label_regions})
    models, n_parameters = [], 0
    for folder in member_dirs(run_dir, folds):
        prefix = "" if folder == run_dir else f"{folder.name}/"
        if prefix:
            members[f"{prefix}plan.json"] = _plan_bytes(folder / "plan.json")
            if (folder / "split.json").exists():
                members[f"{prefix}split.json"] = (folder / "split.json").read_bytes()
        weights, kept, n_parameters = _weights(folder, prefix, checkpoints)
        members.update(weights)
        models.append({"name": prefix.rstrip("/") or "model", "folder": folder, "checkpoints": kept})
    card = model_card(run_dir, plan, models, n_parameters, __version__)
    members["model_card.json"] = _json_bytes(card)
    members["model_card.md"] = model_card_markdown(card).encode()
    members = _without_paths(members, [run_dir, Path(plan.dataset)])
    write_atomic(out_zip, lambda f: write_package_zip(f, members))
    log(f"package: {out_zip} ({out_zip.stat().st_size / 2**20:.1f} MiB; {len(models)} model(s), weights "
        f"{', '.join(sorted({k for m in models for k in m['checkpoints']}))}; {len(members) + 1} members)")
    return out_zip


def _check_paths(run_dir: Path, out_zip: Path) -> None:
    """Refuse, before anything is read or written: a run folder that is missing or holds no plan.json, an output
    whose name does not end ``.zip`` (a package is told from a run folder by being a file; the suffix keeps a
    mistyped run folder name from becoming one), that is a folder, or whose folder is missing or not a folder."""
    if not run_dir.is_dir():
        raise InputError(run_dir, "run folder not found" if not run_dir.exists() else "not a run folder (a file)")
    if out_zip.suffix.lower() != ".zip":
        raise InputError(out_zip, "name the package file with the suffix .zip")
    if out_zip.is_dir():
        raise InputError(out_zip, "is a folder; name the package .zip file")
    parent = out_zip.parent
    if not parent.is_dir():
        raise InputError(parent, "the package's folder does not exist; create it first" if not parent.exists()
                         else "the package's folder is a file, not a folder")


def export_nnunet_package(folder: str | Path, out_zip: str | Path, checkpoint: str = "best",
                          folds: str | Sequence[int | str] | None = None, log: Callable[[str], None] = print) -> Path:
    """Write an nnU-Net v2 trained-model folder as a package of kind ``nnunet`` to ``out_zip``, for ``voxseg
    predict OUT.zip ...`` (which predicts as from the folder).

    Args:
        folder: ``nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>``.
        checkpoint: ``best`` (``checkpoint_best.pth``, else ``checkpoint_final.pth``), ``final`` or ``last``
            (``checkpoint_latest.pth``): one set of weights per fold.
        folds: as for ``voxseg predict``: ``None`` (every numbered fold), ``"all"``, ``"0,2"`` or a list.

    Raises:
        InputError: as :func:`voxseg.infer.nnunet.load_nnunet_model`, or weights that do not fit the network of
            ``plans.json``.
    """
    from voxseg.infer.nnunet import load_nnunet_model, load_nnunet_networks, nnunet_package_members

    folder, out_zip = Path(folder), Path(out_zip)
    _check_paths(folder, out_zip)
    model = load_nnunet_model(folder, folds, checkpoint)
    nets = load_nnunet_networks(model)  # every fold's weights checked against plans.json (strict)
    members = nnunet_package_members(model, checkpoint)
    members["plans.json"] = (folder / "plans.json").read_bytes()  # nnU-Net's own files, as they are
    members["dataset.json"] = (folder / "dataset.json").read_bytes()
    card = _nnunet_card(model, checkpoint, sum(p.numel() for p in nets[0].parameters()))
    members["model_card.json"] = _json_bytes(card)
    members["model_card.md"] = _nnunet_card_markdown(card).encode()
    members = _without_paths(members, [folder])
    write_atomic(out_zip, lambda f: write_package_zip(f, members, kind="nnunet"))
    log(f"package: {out_zip} ({out_zip.stat().st_size / 2**20:.1f} MiB; nnU-Net {model.configuration_name}, "
        f"{', '.join(f.name for f in model.folds)}; {len(members) + 1} members)")
    return out_zip


def _nnunet_card(model, checkpoint: str, n_parameters: int) -> dict:
    """What the package holds, in plain values: no paths (the source folder by its name)."""
    arch = str(model.configuration["architecture"]["network_class_name"]).rsplit(".", 1)[-1]
    return {"kind": "nnunet", "source_folder": model.folder.name, "dataset_name": model.plans.get("dataset_name"),
            "plans_name": model.plans.get("plans_name"), "configuration": model.configuration_name,
            "trainer": model.folds[0].trainer_name, "architecture": arch, "parameters_per_fold": n_parameters,
            "checkpoint": checkpoint,
            "folds": [{"name": f.name, "checkpoint": f.path.name,
                       "mirror_axes": list(f.mirror_axes) if f.mirror_axes else None} for f in model.folds],
            "patch_size": model.configuration.get("patch_size"), "spacing": model.configuration.get("spacing"),
            "channels": model.dataset.get("channel_names", model.dataset.get("modality")),
            "labels": model.dataset.get("labels"), "file_ending": model.file_ending, "voxseg_version": __version__}


def _nnunet_card_markdown(card: dict) -> str:
    folds = ", ".join(f"{f['name']} ({f['checkpoint']})" for f in card["folds"])
    channels = ", ".join(f"{k}: {v}" for k, v in (card["channels"] or {}).items())
    labels = ", ".join(f"{k}: {v}" for k, v in (card["labels"] or {}).items())
    return (f"# nnU-Net model {card['source_folder']}\n\n"
            f"An nnU-Net v2 trained model ({card['dataset_name']}, plans {card['plans_name']}, trainer "
            f"{card['trainer']}), packaged by voxseg {card['voxseg_version']} for `voxseg predict`, which predicts "
            "with it as `nnUNetv2_predict` does with the model folder, without nnU-Net installed.\n\n"
            f"- configuration: {card['configuration']}, {card['architecture']} "
            f"({card['parameters_per_fold']:,} parameters per fold)\n"
            f"- patch {card['patch_size']} voxels at spacing {card['spacing']} mm\n"
            f"- folds (averaged): {folds}\n"
            f"- channels: {channels}\n- labels: {labels}\n"
            f"- input files: `<case>_0000{card['file_ending']}`, one per channel\n\n"
            "```\nvoxseg predict MODEL.zip INPUT_FOLDER OUT_FOLDER\n```\n")


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def _plan_bytes(path: Path) -> bytes:
    """A ``plan.json`` as the run folder has it, but for ``dataset``: the folder's name instead of its path."""
    plan = json.loads(path.read_text())
    if plan.get("dataset"):
        plan["dataset"] = PurePath(plan["dataset"]).name
    return _json_bytes(plan)


def _without_paths(members: dict[str, bytes], folders: Sequence[Path]) -> dict[str, bytes]:
    """The members with each absolute path of ``folders`` (as given and resolved) in a text member replaced by the
    folder's name; the longest paths first, so a folder inside another keeps its own name."""
    paths = {}
    for folder in folders:
        name = folder.resolve().name
        if str(folder) in ("", ".") or not name:
            continue
        for form in {str(folder.absolute()), str(folder.resolve())}:
            paths[form] = paths[json.dumps(form)[1:-1]] = name  # as written, and as JSON writes it
    out = dict(members)
    for name, data in members.items():
        if name.endswith(".safetensors"):
            continue
        for path in sorted(paths, key=len, reverse=True):
            data = data.replace(path.encode(), paths[path].encode())
        out[name] = data
    return out


def _dataset_description(run_dir: Path) -> bytes:
    """dataset.json without file paths (they name the trainer's files): layout, channels, labels, case ids."""
    path = run_dir / "dataset.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    return _json_bytes({"layout": data.get("layout"), "channel_names": data.get("channel_names"),
                        "label_names": data.get("label_names"),
                        "case_ids": [c.get("case_id") for c in data.get("cases", [])]})


def _weights(folder: Path, prefix: str, checkpoints: Sequence[str]) -> tuple[dict[str, bytes], dict, int]:
    """The safetensors members of one model, the plain values of each checkpoint (epoch, val_dice ...) by kind,
    and the network's parameter count. Each state dict is checked against the plan's network (strict)."""
    from safetensors.torch import save as save_safetensors

    plan = RunPlan.load(folder / "plan.json")
    model = build_model(plan)
    out, kept = {}, {}
    for which in dict.fromkeys(checkpoints):
        path = checkpoint_path(folder, which)
        kind = path.stem.removeprefix("checkpoint_")  # "best" may have fallen back to "last"
        checkpoint = read_checkpoint_file(path)
        state = checkpoint.get("model")
        if not isinstance(state, dict):
            raise InputError(path, "no network weights ('model') in this checkpoint")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            lines = str(exc).splitlines()
            raise InputError(path, "checkpoint does not fit the network in plan.json "
                                   f"({lines[1].strip() if len(lines) > 1 else exc})") from None
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        out[weights_name(kind, prefix)] = save_safetensors(tensors, metadata={"checkpoint": kind,
                                                                             "epoch": str(checkpoint.get("epoch"))})
        kept[kind] = {k: v for k, v in checkpoint.items() if not isinstance(v, (dict, torch.Tensor)) or k == "val_dice"}
    return out, kept, sum(p.numel() for p in model.parameters())
