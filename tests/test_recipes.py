"""Named recipes: listing, unknown names, values that parse through the knobs, the command-line override rule,
plan.json's record of the recipe, and every recipe training a few iterations on tiny phantoms and predicting."""
import json
import shutil

import nibabel as nib
import pytest
from click.testing import CliRunner

from voxseg.cli import main, train
from voxseg.cli_options import apply_recipe, train_options
from voxseg.config import RunPlan, list_recipes, load_recipe
from voxseg.config.recipes import recipe_problems
from voxseg.data.phantoms import make_phantom_dataset
from voxseg.errors import InputError

NAMES = [r.name for r in list_recipes()]
FAST = ["--epochs", "1", "--iterations", "2", "--batch-size", "1", "--threads", "1", "--val-every", "1",
        "--swa-epochs", "0", "--time-budget", "5"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("recipes") / "ds", n_cases=3, shape=(16, 20, 16), seed=5)


@pytest.fixture(scope="module")
def t1_phantoms(phantoms, tmp_path_factory):
    """The phantoms' T1 channel alone: the single-channel MRI of the tissue and transfer recipes (N4 per channel
    is the slow part of their preprocessing)."""
    root = tmp_path_factory.mktemp("recipes_t1") / "ds"
    (root / "imagesTr").mkdir(parents=True)
    shutil.copytree(phantoms / "labelsTr", root / "labelsTr")
    for image in (phantoms / "imagesTr").glob("*_0001.nii.gz"):
        shutil.copy(image, root / "imagesTr" / image.name.replace("_0001", "_0000"))
    document = json.loads((phantoms / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**document, "channel_names": {"0": "T1"}}))
    return root


def _data(name: str, phantoms, t1_phantoms):
    return t1_phantoms if name.startswith(("archit", "wang")) else phantoms


def _tiny(name: str) -> list[str]:
    """Command-line overrides that make recipe ``name`` train in seconds: its network narrower and shallower (its
    other network settings kept), small patches or cubes, one short epoch."""
    recipe = load_recipe(name)
    values = recipe.values
    net_args = ",".join(a for a in [values.get("net-args", ""), "base_width=4", "depth=3"] if a)
    if values.get("net") == "vnet":
        net_args = "base_width=4,depth=3,kernel_size=3"
    patch = "16x16" if values.get("dims") == 2 else "8x8x8"
    out = ["--net-args", net_args, *FAST]
    if values.get("minicubes"):
        out += ["--minicubes", "8x8x8", "--minicube-context", "4" if values.get("minicube-context") else "0"]
    else:
        out += ["--patch", patch]
    return out


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def test_the_reports_recipes_are_listed():
    for name in ["default", "henry2021", "henry2021-b", "buchwald2022-2d", "buchwald2022-minicubes",
                 "buchwald2022-context", "buchwald2022-focal-tversky", "archit2022-unet", "archit2022-resunet",
                 "archit2022-denseunet", "archit2022-3d", "wang2020-transfer", "wang2020-finetune", "wang2020-scratch",
                 "yildiz2024-unet", "yildiz2024-unet-ce", "yildiz2024-vnet"]:
        assert name in NAMES
    assert NAMES[0] == "default"
    output = _ok(CliRunner().invoke(main, ["recipes"])).output
    assert output.splitlines()[0].split() == ["name", "paper", "data", "summary"]
    assert "henry2021 " in output and "Henry et al. 2021" in output and "Wang & Tang 2020" in output
    full = _ok(CliRunner().invoke(main, ["recipes", "henry2021"])).output
    assert "--net henry3d" in full and "deviations from the paper" in full and "on a CPU budget" in full


@pytest.mark.parametrize("name", NAMES)
def test_every_recipe_is_complete_and_its_values_parse_through_the_knobs(name):
    recipe = load_recipe(name)
    assert recipe.title and recipe.summary and recipe.data and recipe.paper["year"] and recipe.paper["authors"]
    assert recipe_problems(recipe.values) == []
    assert recipe_problems(recipe.cpu_budget.get("overrides", {})) == []
    assert recipe.cpu_budget.get("what_it_gives")
    ctx = train.make_context("train", ["DATA", "--out", "RUN"])
    kw = {k: v for k, v in ctx.params.items() if k not in ("data", "run_dir", "resume", "overwrite", "plan_only",
                                                            "recipe")}
    with ctx:
        record = apply_recipe(ctx, kw, name)
        options = train_options(kw)  # registry choices, loss specs and cross-checks, as the command line does
    assert record["values"] == recipe.values and record["overridden"] == []
    if "net" in recipe.values:
        assert options.network.name == recipe.values["net"]


@pytest.mark.parametrize("name", [n for n in NAMES if load_recipe(n).values.get("minicubes")])
def test_minicube_inputs_fit_the_network_as_given_and_on_the_cpu_budget(name):
    from voxseg.config import NetworkConfig, RunPlan
    from voxseg.infer import build_model

    recipe = load_recipe(name)
    for values in (recipe.values, {**recipe.values, **recipe.cpu_budget.get("overrides", {})}):
        kwargs = dict(item.split("=") for item in values.get("net-args", "").split(",") if item)
        plan = RunPlan(channel_names=["a", "b", "c", "d"], label_values=[0, 1, 2, 4],
                       network=NetworkConfig(values["net"], 3, {k: int(v) for k, v in kwargs.items()}))
        divisor = build_model(plan).size_divisor
        size = [int(c) + int(values.get("minicube-context", 0)) for c in values["minicubes"].split("x")]
        assert all(s % d == 0 for s, d in zip(size, divisor)), (name, size, divisor)


def test_recipe_problems_name_the_flag():
    assert recipe_problems({"patch": "axb", "epochs": 0, "nope": 1, "n4": "yes"}) == [
        "patch: expected positive integers such as 64x64x64, got 'axb'", "epochs: 0 is outside [1, inf)",
        "nope: not a 'voxseg train' option", "n4: expected true or false, got 'yes'"]


def test_unknown_recipe_is_one_line_listing_the_valid_ones(phantoms, tmp_path):
    with pytest.raises(InputError, match="no such recipe; choose one of archit2022-3d, .*henry2021"):
        load_recipe("henry2020")
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(tmp_path / "r"), "--recipe", "henry2020"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: henry2020: no such recipe")
    assert not (tmp_path / "r").exists()


def test_command_line_overrides_the_recipe_and_plan_records_it(phantoms, tmp_path):
    run = tmp_path / "run"
    result = _ok(CliRunner().invoke(main, ["train", str(phantoms), "--out", str(run), "--recipe", "buchwald2022-2d",
                                           "--patch", "16x16", "--batch-size", "3", "--net-args", "depth=3",
                                           "--plan-only"]))
    assert "recipe buchwald2022-2d: 11 option(s) from it; given here instead: --patch, --batch-size" in result.output
    assert "plan: recipe buchwald2022-2d: buda2d 2D" in result.output
    plan = RunPlan.load(run / "plan.json")
    assert plan.train.patch_size == [1, 16, 16] and plan.train.batch_size == 3  # the command line's
    assert plan.train.optimizer == "adam" and plan.train.lr == 1e-4 and plan.network.name == "buda2d"  # the recipe's
    assert plan.recipe["name"] == "buchwald2022-2d"
    assert plan.recipe["overridden"] == ["--patch", "--batch-size"]
    assert "patch" not in plan.recipe["values"] and plan.recipe["values"]["loss"] == "dice"
    assert json.loads((run / "plan.json").read_text())["recipe"]["name"] == "buchwald2022-2d"


def test_a_plan_without_a_recipe_reads_as_before():
    plan = RunPlan(channel_names=["a"], label_values=[0, 1])
    document = plan.to_dict()
    del document["recipe"]  # a plan.json written before recipes existed
    assert RunPlan.from_dict(document).recipe == {}


@pytest.fixture(scope="module")
def source_run(t1_phantoms, tmp_path_factory):
    """A tiny wang2020-source run, the --init-from of the transfer recipes."""
    run = tmp_path_factory.mktemp("source") / "run"
    _ok(CliRunner().invoke(main, ["train", str(t1_phantoms), "--out", str(run), "--recipe", "wang2020-source",
                                  *_tiny("wang2020-source")]))
    return run


@pytest.mark.parametrize("name", NAMES)
def test_every_recipe_trains_a_few_iterations_and_predicts(name, phantoms, t1_phantoms, source_run, tmp_path):
    run, data = tmp_path / "run", _data(name, phantoms, t1_phantoms)
    extra = ["--init-from", str(source_run)] if name in ("wang2020-finetune", "wang2020-transfer") else []
    _ok(CliRunner().invoke(main, ["train", str(data), "--out", str(run), "--recipe", name, *_tiny(name), *extra]))
    plan = RunPlan.load(run / "plan.json")
    assert plan.recipe["name"] == name
    image = sorted((data / "imagesTr").glob("*_0000.nii.gz"))[0]
    out = tmp_path / "pred.nii.gz"
    _ok(CliRunner().invoke(main, ["predict", str(run), str(image), str(out)]))
    assert nib.load(out).shape == nib.load(image).shape


def test_the_docs_list_every_recipe_and_the_reproductions_page_is_made_from_the_result():
    import importlib.util
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    page = (repo / "docs" / "recipes.md").read_text()
    assert not [n for n in NAMES if f"| `{n}` |" not in page], "docs/recipes.md: add the new recipes to its table"
    sys.path.insert(0, str(repo / "benchmarks"))
    spec = importlib.util.spec_from_file_location("_reproductions", repo / "benchmarks" / "_reproductions.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["_reproductions"] = module
    spec.loader.exec_module(module)
    result = repo / "benchmarks" / "results" / "reproduce.json"
    record = json.loads(result.read_text()) if result.exists() else None
    assert (repo / "docs" / "reproductions.md").read_text() == module.render_page(record), \
        "run `python benchmarks/reproduce.py --page-only`"
    for report in module.REPORTS:  # every recipe a table names exists
        assert all(r in NAMES for r in report.recipes)
