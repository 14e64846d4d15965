"""The package shows the pipeline: io -> data -> config -> nets -> losses -> infer -> train -> plan -> runs -> metrics ->
report -> demo / cli. Planning times the real training step, so it comes after train; runs/ drives a run folder.
A module imports only from its own package and the ones before it (function-level imports count)."""
from __future__ import annotations

import ast
from pathlib import Path

import voxseg

ORDER = ["errors", "io", "data", "config", "nets", "losses", "infer", "train", "plan", "runs", "metrics", "report", "demo",
         "cli"]
STAGE_OF = {"cli_options": "cli"}
"""Top-level modules that belong to a stage named otherwise (``voxseg/cli_options.py`` is part of the CLI)."""


def _stage_name(top: str) -> str | None:
    """The stage of a top-level package or module name of voxseg (``"data"``, ``"cli_options"``), or None."""
    top = STAGE_OF.get(top, top)
    return top if top in ORDER else None


def _stage(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "voxseg" or len(parts) < 2:
        return None
    name = _stage_name(parts[1])
    return None if name is None else ORDER.index(name)


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "voxseg" and node.level == 0:
            found += [(node.lineno, f"voxseg.{alias.name}") for alias in node.names  # from voxseg import cli
                      if not alias.name.startswith("__")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def test_no_module_imports_a_later_stage():
    root = Path(voxseg.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) > 40
    late, unplaced = [], []
    for path in files:
        rel = path.relative_to(root)
        if rel == Path("__init__.py"):
            continue
        own = _stage_name(rel.parts[0].removesuffix(".py"))
        if own is None:
            unplaced.append(f"voxseg/{rel}")
            continue
        for line, module in _imports(path):
            stage = _stage(module)
            if stage is not None and stage > ORDER.index(own):
                late.append(f"voxseg/{rel}:{line} imports {module}")
    assert not unplaced, "modules in no stage (add them to ORDER or STAGE_OF): " + ", ".join(unplaced)
    assert not late, "\n".join(late)


def test_every_imported_voxseg_module_has_a_stage():
    """An import of a top-level voxseg module outside ORDER and STAGE_OF would escape the order check."""
    root = Path(voxseg.__file__).parent
    unknown = [f"voxseg/{path.relative_to(root)}:{line} imports {module}"
               for path in sorted(root.rglob("*.py")) for line, module in _imports(path)
               if module.startswith("voxseg.") and _stage(module) is None]
    assert not unknown, "\n".join(unknown)


def test_the_order_checker_sees_function_level_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from voxseg.infer.model_files import load_model\n")
    assert [_stage(m) for _, m in _imports(bad)] == [ORDER.index("infer")]


def test_the_order_checker_places_cli_options_and_from_voxseg_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from voxseg import cli\nimport voxseg.cli_options\n")
    assert [_stage(m) for _, m in _imports(bad)] == [ORDER.index("cli")] * 2


def test_validation_dice_in_training_matches_the_metrics_oracle():
    """Training scores validation without importing voxseg.metrics (a later stage); its Dice must agree."""
    import numpy as np

    from voxseg.metrics import overlap_metrics
    from voxseg.train.validation import mask_dice

    rng = np.random.default_rng(0)
    empty = np.zeros((6, 7, 5), bool)
    masks = [empty, rng.random((6, 7, 5)) > 0.5, rng.random((6, 7, 5)) > 0.9, ~empty]
    for pred in masks:
        for ref in masks:
            assert mask_dice(pred, ref) == overlap_metrics(pred, ref, (1.0, 1.0, 1.0))["dice"]
    assert mask_dice(empty, empty) == 1.0 and mask_dice(empty, ~empty) == 0.0
