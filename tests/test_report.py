"""The HTML report of a run and of an evaluation: what it says is what the run folder and the metric files
hold, the worst cases come first and are drawn over their own image, and bad folders are one line."""
import base64
import csv
import html
import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from voxseg.cli import main
from voxseg.data.phantoms import make_phantom_dataset
from voxseg.io import read_volume, write_volume
from voxseg.metrics import evaluate_folders
from voxseg.report import REPORT_NAME, write_report
from voxseg.config import NetworkConfig, TrainConfig, TrainOptions
from voxseg.runs import run_training

STRUCTURES = {"necrosis": [1], "edema": [2], "enhancing": [4]}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("rep") / "ds", n_cases=4, shape=(20, 24, 20), seed=11)


@pytest.fixture(scope="module")
def evaluation(dataset, tmp_path_factory):
    """Predictions equal to the references except phantom_002 (edema erased) and phantom_001 (half of its
    enhancing tumour erased), evaluated into a folder."""
    root = tmp_path_factory.mktemp("eval")
    pred = root / "pred"
    pred.mkdir()
    for ref in sorted((dataset / "labelsTr").glob("*.nii.gz")):
        label, geometry = read_volume(ref, dtype=np.int16)
        if ref.name.startswith("phantom_002"):
            label[label == 2] = 0
        if ref.name.startswith("phantom_001"):
            z = np.nonzero(label == 4)[0]
            label[(label == 4) & (np.arange(label.shape[0])[:, None, None] < np.median(z))] = 0
        write_volume(label, geometry, pred / ref.name)
    out = root / "metrics"
    rows, summary = evaluate_folders(pred, dataset / "labelsTr", out, STRUCTURES, progress=False)
    return out, rows, summary


def _pictures(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def _without_pictures(page: str) -> str:
    return re.sub(r'src="data:image/png;base64,[^"]+"', 'src=""', page)


def test_evaluation_report_ranks_cases_and_draws_them_over_their_image(evaluation, dataset):
    folder, rows, summary = evaluation
    page = write_report(folder / REPORT_NAME, evaluation_dirs=[folder]).read_text()
    text = _without_pictures(page)
    cases = summary["cases"]
    assert cases["worst"] == "phantom_002" and cases["best"] in ("phantom_000", "phantom_003")
    # The per-case table lists the worst case first, with its mean Dice as the summary has it.
    table = text[text.index("Every case (worst first)"):]
    first_row = re.search(r"<tr><td>([^<]+)</td><td class=\"num\">([0-9.]+)</td>", table)
    assert first_row.group(1) == "phantom_002"
    assert float(first_row.group(2)) == pytest.approx(cases["mean_dice"]["phantom_002"], abs=5e-4)
    # Summary cells: mean ± std (median) of the Dice over cases, per structure.
    edema = summary["metrics"]["edema"]["dice"]
    assert f"{edema['mean']:.3f} ± {edema['std']:.3f} ({edema['median']:.3f})" in text
    assert edema["mean"] < 1.0
    # Best, median and worst case drawn, each over the first channel of its own image.
    for rank in ("best", "median", "worst"):
        assert f'alt="{rank}: {cases[rank]} (mean Dice {cases["mean_dice"][cases[rank]]:.3f})"' in text
    assert f"background: {dataset / 'imagesTr' / 'phantom_002_0000.nii.gz'}" in text
    pictures = _pictures(page)
    assert len(pictures) == 1 + len({cases[r] for r in ("best", "median", "worst")})  # Dice per case + overlays
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 2000 for p in pictures)
    # The confusion matrix counts every voxel of every case.
    voxels = sum(int(np.prod(read_volume(p)[0].shape)) for p in (dataset / "labelsTr").glob("*.nii.gz"))
    matrix = summary["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == voxels
    assert f'<td class="num">{matrix[0][0]}</td>' in text
    assert not list(folder.glob(".*tmp*")), "a temporary file was left behind"


def test_references_away_from_their_images_are_drawn_on_a_blank_background(evaluation, tmp_path):
    folder, _, _ = evaluation
    document = json.loads((folder / "metrics_summary.json").read_text())
    refs = tmp_path / "refs"
    shutil.copytree(document["ref_dir"], refs)  # copies, not links: nothing leads back to the dataset
    moved = tmp_path / "metrics"
    shutil.copytree(folder, moved)
    document["ref_dir"] = str(refs)
    (moved / "metrics_summary.json").write_text(json.dumps(document))
    text = _without_pictures(write_report(tmp_path / "r.html", evaluation_dirs=[moved]).read_text())
    assert "labels drawn on a blank background" in text
    shutil.rmtree(refs)  # gone altogether: the tables remain, the pictures are said to be missing
    text = _without_pictures(write_report(tmp_path / "r.html", evaluation_dirs=[moved]).read_text())
    assert "have moved since the evaluation" in text and "Every case (worst first)" in text


def test_names_in_the_page_are_escaped(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir(), pred.mkdir()
    label = np.zeros((6, 6, 6), np.uint8)
    label[2:4, 2:4, 2:4] = 1
    for folder in (ref, pred):
        nib.save(nib.Nifti1Image(label, np.eye(4)), folder / "a<b&c.nii.gz")
    evaluate_folders(pred, ref, tmp_path / "m", {"lesion": [1]}, progress=False)
    text = _without_pictures(write_report(tmp_path / "r.html", evaluation_dirs=[tmp_path / "m"]).read_text())
    assert "a&lt;b&amp;c" in text and "a<b&c" not in text


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "run"
    options = TrainOptions(network=NetworkConfig(kwargs={"base_width": 4, "depth": 3}),
                           train=TrainConfig(patch_size=[16, 16, 16], epochs=3, iterations_per_epoch=2, num_threads=1,
                                             val_fraction=0.25))
    run_training(dataset, folder, options, progress=False)
    return folder


def test_run_report_says_what_the_run_folder_holds(run):
    from voxseg.nets import build_model
    from voxseg.nets import count_parameters
    from voxseg.config import RunPlan

    page = write_report(run / REPORT_NAME, run).read_text()
    text = html.unescape(_without_pictures(page))
    plan = RunPlan.load(run / "plan.json")
    with (run / "log.csv").open(newline="") as fh:
        log = list(csv.DictReader(fh))
    best = max(log, key=lambda r: float(r["val_dice_mean"]))
    assert f"<tr><th>best validation Dice (mean)</th><td class=\"num\">{float(best['val_dice_mean']):.3f}</td></tr>" in text
    assert f"<tr><th>at epoch</th><td class=\"num\">{best['epoch']}</td></tr>" in text
    assert f"<tr><th>iterations</th><td class=\"num\">{log[-1]['iterations']}</td></tr>" in text
    assert ", ".join(plan.channel_names) in text
    assert f"{count_parameters(build_model(plan)) / 1e6:.2f} M parameters" in text
    split = json.loads((run / "split.json").read_text())
    assert ", ".join(split["val"]) in text
    assert len(_pictures(page)) == 1  # the learning curves
    # A run that has not finished an epoch yet still gets its page (the plan), and says so.
    (run / "log.csv").rename(run / "log.keep")
    try:
        text = write_report(run / "early.html", run).read_text()
    finally:
        (run / "log.keep").rename(run / "log.csv")
    assert "No epoch finished yet" in text and ", ".join(plan.channel_names) in text
    # A line cut short by a killed run, or garbage, is left out: the epochs before it are reported.
    whole = (run / "log.csv").read_text()
    try:
        for tail in ("4,8,0.00", "\x00\x01garbage,,,\n", "1.5,2,abc,xyz\n"):
            (run / "log.csv").write_text(whole + tail)
            text = write_report(run / "cut.html", run).read_text()
            assert f"<tr><th>epochs</th><td class=\"num\">{log[-1]['epoch']}</td></tr>" in text
    finally:
        (run / "log.csv").write_text(whole)


def test_report_command_writes_pages_and_refuses_what_is_not_a_run_or_an_evaluation(run, evaluation, tmp_path):
    folder, _, _ = evaluation
    out = tmp_path / "both.html"
    result = CliRunner().invoke(main, ["report", str(run), str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = _without_pictures(out.read_text())
    assert 'id="plan"' in text and 'id="training"' in text and 'id="evaluation0"' in text
    for bad, message in ((tmp_path / "missing", "folder not found"),
                         (tmp_path, "neither a run folder")):
        result = CliRunner().invoke(main, ["report", str(bad)])
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: {message}"), result.output
        assert not (bad / REPORT_NAME).exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics_summary.json").write_text("{not json")
    result = CliRunner().invoke(main, ["report", str(broken)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.output.strip().startswith(f"error: {broken / 'metrics_summary.json'}: unreadable JSON")
    assert sorted(p.name for p in broken.iterdir()) == ["metrics_summary.json"]


def test_overlay_slices_keep_the_voxel_proportions():
    from voxseg.report.curves import overlay_figure, slice_aspect

    spacing = (1.5, 1.0, 0.5)  # (sz, sy, sx) mm
    assert slice_aspect(spacing, 0) == 2.0  # an axial slice: rows y (1 mm) over columns x (0.5 mm)
    assert slice_aspect(spacing, 1) == 3.0  # rows z (1.5 mm) over columns x: 1.5 mm slices drawn 3x as tall
    assert slice_aspect(spacing, 2) == 1.5
    assert slice_aspect(None, 1) == 1.0
    labels = np.zeros((6, 8, 8), np.int32)
    labels[2:4, 3:5, 3:5] = 1
    fig = overlay_figure(np.zeros((6, 8, 8), np.float32), labels, labels, spacing=spacing)
    drawn = [ax.get_aspect() for ax in fig.axes]
    assert drawn == [2.0, 3.0, 1.5] * 2
