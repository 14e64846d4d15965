"""The README and the user guide: quick-start commands as CI runs them, links that resolve, and benchmark figures
made from the saved results (benchmarks/figures_page.py), never typed."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
DEMO_BLOCK = "```bash\npip install -e . && voxseg demo\n```"
TEST_COMMAND = 'pip install -e ".[test]" && python -m pytest'


def _load(name: str):
    """A module of benchmarks/ (not a package: the scripts import each other by file name)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the module runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def figures_page():
    return _load("figures_page")


@pytest.fixture(scope="module")
def results_module():
    return _load("_results")


def test_readme_keeps_the_quick_start_commands_ci_runs():
    readme = (REPO / "README.md").read_text()
    assert DEMO_BLOCK in readme
    assert f"```bash\n{TEST_COMMAND}\n```" in readme
    assert TEST_COMMAND in (REPO / ".ci" / "run").read_text().splitlines()


def test_save_result_writes_figures_with_command_commit_date_and_machine(results_module, tmp_path):
    figures = {"dice_mean": 0.5, "rows": [{"a": 1}]}
    path = results_module.save_result("demo_bench", figures, ["/x/benchmarks/demo_bench.py", "--minutes", "1"],
                                      results_dir=tmp_path)
    assert path == tmp_path / "demo_bench.json"
    record = json.loads(path.read_text())
    assert record["figures"] == figures
    assert record["command"] == "python benchmarks/demo_bench.py --minutes 1"
    assert re.fullmatch(r"[0-9a-f]{4,40}|unknown", record["commit"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["date"])
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"]
    assert record["machine"]["torch_threads"] >= 1
    assert [p.name for p in tmp_path.iterdir()] == ["demo_bench.json"]  # no temporary file left behind


def test_every_benchmark_script_saves_its_result():
    scripts = [p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_") and p.name != "figures_page.py"]
    assert len(scripts) >= 10
    missing = [p.name for p in scripts if "save_result(" not in p.read_text()]
    assert not missing, f"scripts that print a final JSON line but do not save it: {missing}"


def _fake_record(name: str, figures: dict, commit: str) -> dict:
    return {"name": name, "command": f"python benchmarks/{name}.py", "commit": commit, "date": "2030-01-02T03:04:05Z",
            "machine": {"cpu": "Fake CPU 9000", "cores": 2, "torch_threads": 2, "torch": "2.13.0", "gpu": None},
            "figures": figures}


def test_generator_writes_the_page_and_the_readme_block_from_the_results(figures_page, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    hippo = {"dice_anterior": 0.8123, "dice_posterior": 0.7987, "dice_mean": 0.8055, "train_minutes": 20.0,
             "iterations": 1234, "dice_anterior_no_tta": 0.8, "dice_posterior_no_tta": 0.79}
    (results / "hippocampus.json").write_text(json.dumps(_fake_record("hippocampus", hippo, "abc1234")))
    (results / "my_probe.json").write_text(json.dumps(_fake_record("my_probe", {"speed": 1.5, "label": "x"}, "def5678")))
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nbefore\n\n<!-- figures:start -->\nold typed figure 0.999\n<!-- figures:end -->\n\nafter\n")
    page = tmp_path / "docs" / "benchmarks.md"

    assert figures_page.main(["--results", str(results), "--page", str(page), "--readme", str(readme)]) == 0

    text = page.read_text()
    assert "held-out Dice anterior 0.812, posterior 0.799 (mean 0.805; 0.795 without TTA), 1,234 iterations in 20 min" \
        in text
    assert "commit: `abc1234`" in text and "2030-01-02T03:04:05Z" in text
    assert "Fake CPU 9000, 2 cores, 2 torch threads, torch 2.13.0, no GPU" in text
    assert "## brats" in text and "Command: `python benchmarks/brats.py`" in text
    assert text.count("Current figure: not yet measured") == len(figures_page.BENCHMARKS) - 1
    assert "### my_probe" in text and "speed 1.5, label x" in text  # a result no benchmark entry knows

    block = readme.read_text()
    assert block.startswith("# title\n\nbefore\n\n<!-- figures:start -->") and block.endswith("<!-- figures:end -->\n\nafter\n")
    assert "old typed figure" not in block
    row = next(line for line in block.splitlines() if line.startswith("| [hippocampus]"))
    assert "0.812" in row and "`abc1234`" in row and "(docs/benchmarks.md#hippocampus)" in row
    assert "| not yet measured: `python benchmarks/brats.py` |" in block
    assert "my_probe" not in block  # the README shows the known benchmarks only

    assert figures_page.main(["--results", str(results), "--page", str(page), "--readme", str(readme), "--check"]) == 0
    hippo["dice_anterior"] = 0.5
    (results / "hippocampus.json").write_text(json.dumps(_fake_record("hippocampus", hippo, "abc1234")))
    assert figures_page.main(["--results", str(results), "--page", str(page), "--readme", str(readme), "--check"]) == 1


def test_a_result_missing_a_headline_key_still_shows_its_figures(figures_page):
    benchmark = next(b for b in figures_page.BENCHMARKS if b.name == "brats")
    assert figures_page.headline(benchmark, {"dice_wt": 0.8, "note": "partial"}) == "dice_wt 0.8, note partial"


def test_committed_readme_block_and_benchmarks_page_are_made_from_the_committed_results(figures_page):
    stale = figures_page.write_figures(BENCHMARKS / "results", REPO / "docs" / "benchmarks.md", REPO / "README.md",
                                       check=True)
    assert not stale, f"run `python benchmarks/figures_page.py`: {stale} differ from what the results make"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text, inside = [], False
    for line in path.read_text().splitlines():
        inside = inside != line.startswith("```")
        if not inside and line.startswith("#"):
            text.append(_anchor(line.lstrip("#")))
    return set(text)


def test_links_in_the_readme_and_the_guide_resolve():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if path.name == "options.md" and path.parent == REPO / "docs" and not path.exists():
                continue  # generated from the typed options by its own script
            if not path.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_benchmark_links_to_a_heading_of_the_guide(figures_page):
    for benchmark in figures_page.BENCHMARKS:
        page, _, anchor = benchmark.topic.partition("#")
        assert anchor in _anchors(REPO / "docs" / page), benchmark.topic


def test_readme_and_guide_hold_no_dated_measurements_or_seed_numbers():
    written = [REPO / "README.md", *(p for p in sorted((REPO / "docs").glob("*.md"))
                                     if p.name not in ("benchmarks.md", "options.md"))]
    for page in written:
        text = page.read_text()
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), f"{page.name} holds a date"
        assert not re.search(r"\bseed (report )?0\d\d\b", text, re.IGNORECASE), f"{page.name} cites a seed number"
