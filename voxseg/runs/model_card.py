"""The model card of a package (``voxseg export``): what a run was trained on, how well it validated, how long it
trained, on what hardware and by which command, from what the run folder records (``split.json`` /
``splits.json``, the checkpoints, ``log.csv``, ``training.json``). A card as JSON and as Markdown."""
from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

from voxseg.config import RunPlan
from voxseg.runs.run_folder import TRAINING_RECORD

__all__ = ["ModelEntry", "command_without_paths", "model_card", "model_card_markdown"]

ModelEntry = dict[str, Any]
"""One model of a package: ``name`` (``"model"`` or ``"fold_<k>"``), ``folder`` (its run folder), ``checkpoints``
(kind -> the checkpoint dict's plain values: ``epoch``, ``val_dice`` ...)."""


def command_without_paths(command: str) -> str:
    """A recorded command line with every file path reduced to its last part (``voxseg train /home/ann/data/hippo
    --out runs/h`` -> ``voxseg train hippo --out h``), so a shared model card names none of the trainer's files. A
    path is a word (or the value of ``--option=value``) holding a ``/`` or ``\\``, or starting with ``~``."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: not a command voxseg recorded
        words = command.split()

    def last_part(word: str) -> str:
        if not (word.startswith("~") or "/" in word or "\\" in word):
            return word
        name = PureWindowsPath(word).name if "\\" in word else PurePath(word).name
        return name or word.strip("/\\~") or "PATH"

    out = []
    for word in words:
        option = re.match(r"^(--?[A-Za-z][\w-]*=)(.*)$", word)
        out.append(option.group(1) + last_part(option.group(2)) if option else last_part(word))
    return shlex.join(out)


def _log_rows(folder: Path) -> list[dict[str, str]]:
    path = folder / "log.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _float(text: str | None) -> float | None:
    try:
        return round(float(text), 4)
    except (TypeError, ValueError):
        return None


def _validation_dice(checkpoint: dict, rows: list[dict[str, str]]) -> dict[str, float | None]:
    """Dice per structure at the checkpoint's epoch: its own ``val_dice`` (a best checkpoint), else log.csv's row."""
    own = checkpoint.get("val_dice")
    if isinstance(own, dict) and own:
        return {str(k): _float(v) for k, v in own.items()}
    row = next((r for r in rows if str(r.get("epoch")) == str(checkpoint.get("epoch"))), None)
    if row is None:
        return {}
    return {k[len("val_dice_"):]: _float(v) for k, v in row.items()
            if k.startswith("val_dice_") and k != "val_dice_mean" and _float(v) is not None}


def _split(folder: Path) -> dict:
    path = folder / "split.json"
    return json.loads(path.read_text()) if path.exists() else {"train": [], "val": []}


def model_card(run_dir: Path, plan: RunPlan, models: list[ModelEntry], n_parameters: int, version: str) -> dict:
    """The card as a JSON-ready dict.

    Args:
        run_dir: the run folder exported.
        plan: its plan.
        models: the models exported (:data:`ModelEntry`).
        n_parameters: the network's parameter count.
        version: the voxseg version exporting.
    """
    record = run_dir / TRAINING_RECORD
    sessions = json.loads(record.read_text()).get("sessions", []) if record.exists() else []
    entries = []
    for model in models:
        folder = Path(model["folder"])
        rows, split = _log_rows(folder), _split(folder)
        entries.append({
            "name": model["name"], "training_cases": len(split.get("train", [])),
            "training_case_ids": list(split.get("train", [])), "validation_cases": len(split.get("val", [])),
            "minutes_trained": _float(rows[-1].get("minutes")) if rows else None,
            "epochs_trained": len(rows),
            "checkpoints": {kind: {"epoch": ckpt.get("epoch"), "validation_dice": _validation_dice(ckpt, rows)}
                            for kind, ckpt in model["checkpoints"].items()},
        })
    return {
        "voxseg_version": version, "network": plan.network.name, "spatial_dims": plan.network.spatial_dims,
        "parameters": n_parameters, "channels": list(plan.channel_names),
        "labels": {str(v): plan.label_names.get(str(v), "") for v in plan.label_values},
        "label_scheme": plan.label_scheme, "models": entries,
        "trained_with": [command_without_paths(s["command"]) for s in sessions if s.get("command")] or None,
        "hardware": [s.get("hardware") for s in sessions] or None,
    }


def model_card_markdown(card: dict) -> str:
    """The card as a short Markdown page."""
    unknown = "not recorded (trained before voxseg kept training.json)"
    lines = [f"# Model card: {card['network']} {card['spatial_dims']}D", "",
             f"- voxseg version: {card['voxseg_version']}",
             f"- parameters: {card['parameters']:,} (weights about {4 * card['parameters'] / 2**20:.1f} MiB)",
             f"- input channels, in this order: {', '.join(card['channels'])}",
             f"- labels ({card['label_scheme']}): "
             + ", ".join(f"{v} {name}".strip() for v, name in card["labels"].items()),
             f"- trained with: {'; '.join(f'`{c}`' for c in card['trained_with']) if card['trained_with'] else unknown}",
             f"- hardware: {'; '.join(card['hardware']) if card['hardware'] else unknown}", ""]
    for model in card["models"]:
        lines += [f"## {model['name']}", "",
                  f"- training cases: {model['training_cases']}; validation cases: {model['validation_cases']}",
                  f"- trained: {model['epochs_trained']} epochs, {model['minutes_trained']} minutes"]
        for kind, ckpt in model["checkpoints"].items():
            dice = ", ".join(f"{k} {v}" for k, v in ckpt["validation_dice"].items()) or "no validation"
            lines.append(f"- {kind} weights (epoch {ckpt['epoch']}): validation Dice {dice}")
        lines.append("")
    return "\n".join(lines)
