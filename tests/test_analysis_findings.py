"""The paper's findings checked on a study (analysis.findings): verdicts from fixture studies,
a collapsed stage flagged, the report's section and the lines `wsss report` prints."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import findings
from analysis.cli import main
from analysis.findings import NOT_SUPPORTED, NOT_TESTABLE, SUPPORTED, check_findings, findings_lines
from analysis.report import build_report
from analysis.store import load_results
from tests.analysis_fixture import write_coco_lambda, write_demo, write_voc_ablation


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("findings")
    written = {"voc": write_voc_ablation(root), "coco": write_coco_lambda(root), "demo": write_demo(root),
               "collapsed": write_demo(root, name="collapsed", collapse="segmentation")}
    return {name: (study, load_results(study.path)) for name, study in written.items()}


def _by_claim(frame: pd.DataFrame) -> dict[str, findings.Finding]:
    return {finding.claim: finding for finding in check_findings(frame)}


def _one(frame: pd.DataFrame, start: str) -> findings.Finding:
    matches = [f for claim, f in _by_claim(frame).items() if claim.startswith(start)]
    assert len(matches) == 1, (start, list(_by_claim(frame)))
    return matches[0]


def _val(rows: pd.DataFrame, stage: str, **where: object) -> pd.DataFrame:
    part = rows[(rows["stage"] == stage) & (rows["split"] == "val") & (rows["status"] == "completed") & ~rows["naive"]]
    for name, value in where.items():
        part = part[part[name] == value]
    return part


def test_importance_sampling_difference_and_spread_match_the_rows(studies):
    study, frame = studies["voc"]
    for pooling in ("gmp", "gap"):
        per_seed = []
        for seed in (0, 1):
            rows = _val(study.rows, "cam", pooling=pooling, seed=seed, num_samples=1)
            high = rows[rows["lambda"] == 1.0].groupby("fsl")["miou"].mean()
            low = rows[rows["lambda"] == 0.0].groupby("fsl")["miou"].mean()
            per_seed.append(100 * (high - low).mean())
        finding = _one(frame, f"importance sampling beats {pooling.upper()}")
        assert finding.difference == f"{np.mean(per_seed):+.1f} points"
        assert finding.spread == f"± {np.std(per_seed, ddof=1):.1f} over 2 seeds"
        assert finding.verdict == SUPPORTED


def test_importance_sampling_notes_the_best_mixed_lambda(studies):
    study, frame = studies["demo"]
    rows = _val(study.rows, "cam", pooling="gmp").groupby("lambda")["miou"].mean()
    mixed = rows[(rows.index > 0) & (rows.index < 1)]
    best = mixed.idxmax()
    finding = _one(frame, "importance sampling beats GMP")
    assert finding.note.startswith(f"best mixed λ={best:g}: {100 * (mixed[best] - rows[0.0]):+.1f} points over λ=0")
    only_ends = frame[frame["lambda"].isin([0.0, 1.0])]
    assert "best mixed" not in _one(only_ends, "importance sampling beats GMP").note


@pytest.mark.parametrize("stage, name", [("cam", "CAM"), ("segmentation", "DeepLab")])
def test_fsl_contour_finding_pairs_on_and_off_at_equal_settings(studies, stage, name):
    study, frame = studies["demo"]
    rows = _val(study.rows, stage).set_index("lambda")
    per_lambda = 100 * (rows[rows["fsl"]]["contour_f"] - rows[~rows["fsl"]]["contour_f"])
    finding = _one(frame, f"FSL raises {name} contour F")
    assert finding.difference == f"{per_lambda.mean():+.1f} points" and finding.spread == "one seed, no spread"
    assert finding.verdict == (SUPPORTED if per_lambda.mean() > 0 else NOT_SUPPORTED)
    assert finding.note.startswith("per λ: " + ", ".join(f"{lam:g} {gain:+.1f}" for lam, gain in per_lambda.items()))


def test_effects_that_go_the_wrong_way_are_not_supported(studies):
    _, frame = studies["demo"]
    swapped = frame.assign(fsl=~frame["fsl"].astype(bool), **{"lambda": 1.0 - frame["lambda"]})
    assert _one(swapped, "importance sampling beats GMP").verdict == NOT_SUPPORTED
    assert _one(swapped, "FSL raises CAM contour F").verdict == NOT_SUPPORTED
    assert _one(swapped, "FSL raises DeepLab contour F").verdict == NOT_SUPPORTED


def test_an_effect_within_the_seed_spread_is_not_supported():
    per_seed = pd.Series([0.05, -0.03], index=pd.Index([0, 1], name="seed"))
    finding = findings._effect("x", per_seed)
    assert finding.difference == "+1.0 points" and finding.spread == "± 5.7 over 2 seeds"
    assert finding.verdict == NOT_SUPPORTED and "within the seed spread" in finding.note


def test_untestable_findings_say_why(studies):
    _, coco = studies["coco"]
    assert _one(coco, "importance sampling beats GAP").verdict == NOT_TESTABLE
    assert "no λ=0 trials" in _one(coco, "importance sampling beats GAP").note
    assert _one(coco, "FSL raises CAM").note == _one(coco, "FSL raises DeepLab").note == "FSL is always on"
    assert _one(coco, "the number of sampled pixels").note == "num_samples has one value (1)"
    one_lambda = coco[coco["lambda"] == 0.8]
    assert _one(one_lambda, "importance sampling beats GAP").note == "λ has one value (0.8)"
    cam_only = coco[coco["stage"] == "cam"]
    assert _one(cam_only, "AffinityNet improves").verdict == NOT_TESTABLE
    assert _one(cam_only, "DeepLab improves").verdict == NOT_TESTABLE


def test_stage_gains_are_per_trial_and_supported_without_collapse(studies):
    study, frame = studies["demo"]
    wide = _val(study.rows, "cam").set_index("trial_id")[[]].assign(
        **{stage: _val(study.rows, stage).set_index("trial_id")["miou"] for stage in ("cam", "affinity", "segmentation")})
    affinity = _one(frame, "AffinityNet improves on the CAM labels")
    assert affinity.difference == f"{100 * (wide['affinity'] - wide['cam']).mean():+.1f} points"
    assert affinity.verdict == SUPPORTED and affinity.note == f"{(wide['affinity'] > wide['cam']).sum()} of 6 trials improve"
    deeplab = _one(frame, "DeepLab improves on")
    assert deeplab.difference == f"{100 * (wide['segmentation'] - wide['affinity']).mean():+.1f} points"
    assert deeplab.verdict == SUPPORTED
    assert {f.verdict for f in check_findings(frame) if "collapse" in f.claim} == {SUPPORTED}


def test_a_stage_collapsed_to_background_is_flagged(studies):
    _, frame = studies["collapsed"]
    deeplab = _one(frame, "DeepLab improves on")
    assert deeplab.verdict == NOT_SUPPORTED and "6 of 6 below 0.8x" in deeplab.note
    collapse = _one(frame, "DeepLab predictions span more than one class")
    assert collapse.verdict == NOT_SUPPORTED and collapse.difference == "6 of 6 trials collapsed"
    assert "collapsed_00000 (only background)" in collapse.note
    assert collapse.warning.startswith("DeepLab predictions collapsed to one class in 6 of 6 trials")
    assert _one(frame, "AffinityNet predictions span").verdict == SUPPORTED


def test_one_foreground_class_everywhere_is_a_collapse_too(studies):
    _, frame = studies["demo"]
    painted = frame.copy()
    target = painted.index[(painted["stage"] == "affinity") & (painted["trial_id"] == "demo_00002")]
    for index in target:  # background IoU 0, one foreground class with a small IoU, the rest 0 or absent (NaN)
        painted.at[index, "per_class_iou"] = [0.0, 0.0, 0.04, *[np.nan] * 3, *[0.0] * 15]
    collapse = _one(painted, "AffinityNet predictions span")
    assert collapse.verdict == NOT_SUPPORTED and collapse.note == "collapsed to one class: demo_00002 (only bicycle)"


def test_a_class_one_trial_never_predicts_is_flagged(studies):
    _, frame = studies["demo"]
    healthy = _one(frame, "every foreground class is predicted")
    assert healthy.verdict == SUPPORTED and not healthy.warning
    assert healthy.difference == "trials missing a class: CAM 0 of 6, AffinityNet 0 of 6, DeepLab 0 of 6"
    holed = frame.copy()
    for index in holed.index[(holed["stage"] == "cam") & (holed["trial_id"] == "demo_00000")]:
        holed.at[index, "per_class_iou"] = [*holed.at[index, "per_class_iou"][:4], 0.0, *holed.at[index, "per_class_iou"][5:]]
    finding = _one(holed, "every foreground class is predicted")
    assert finding.verdict == NOT_SUPPORTED and finding.difference.startswith("trials missing a class: CAM 1 of 6,")
    assert finding.note == "never predicted: CAM demo_00000 (boat)"
    assert finding.warning == "a foreground class is never predicted: CAM demo_00000 (boat)"
    # a collapse is the collapse check's finding, not a missing class
    assert _one(studies["collapsed"][1], "every foreground class is predicted").verdict == SUPPORTED


def test_the_best_trial_must_segment_every_foreground_class(studies):
    study, frame = studies["demo"]
    val = study.rows[(study.rows["split"] == "val") & (study.rows["stage"] == "segmentation")]
    best = val.loc[val["miou"].idxmax()]
    finding = _one(frame, "the best trial's DeepLab segments every foreground class")
    assert finding.verdict == SUPPORTED and finding.note == f"trial {best['trial_id']}"
    assert finding.difference.startswith(f"{100 * best['miou']:.1f}% mIoU")
    weak = frame.copy()
    index = weak.index[(weak["trial_id"] == best["trial_id"]) & (weak["stage"] == "segmentation") & (weak["split"] == "val")][0]
    weak.at[index, "per_class_iou"] = [0.9, 0.9, 0.05, *[0.9] * 18]  # one class barely segmented
    finding = _one(weak, "the best trial's DeepLab")
    assert finding.verdict == NOT_SUPPORTED and "lowest foreground IoU 5.0% (bicycle)" in finding.difference
    assert _one(studies["collapsed"][1], "the best trial's DeepLab").verdict == NOT_SUPPORTED


def test_num_samples_trend_is_tested_where_num_samples_varies(studies):
    study, frame = studies["voc"]
    finding = _one(frame, "the number of sampled pixels has no significant effect (DeepLab mIoU)")
    assert finding.difference.endswith("points from 1 to 100 pixels") and "λ=1 · GAP · FSL" in finding.note
    flat = frame.copy()
    rows = (flat["stage"] == "segmentation") & (flat["lambda"] == 1.0) & (flat["pooling"] == "gap") & flat["fsl"]
    flat.loc[rows, "miou"] = 0.6 + 0.001 * flat.loc[rows, "seed"]  # no trend at all
    assert _one(flat, "the number of sampled pixels").verdict == SUPPORTED
    steep = flat.copy()
    steep.loc[rows, "miou"] = 0.5 + 0.05 * np.log10(steep.loc[rows, "num_samples"]) + 0.001 * steep.loc[rows, "seed"]
    trend = _one(steep, "the number of sampled pixels")
    assert trend.verdict == NOT_SUPPORTED and trend.difference == "+10.0 points from 1 to 100 pixels"


def test_report_has_the_findings_section_first(studies):
    collapsed = build_report([studies["collapsed"][0].path])
    assert "The paper&#x27;s findings, checked on this study" in collapsed
    assert collapsed.index("findings, checked on this study") < collapsed.index("Ablation curves") \
        < collapsed.index("CAM overlays of the best trials") < collapsed.index("<h3>Trials</h3>")
    assert "class='warning'>Warning: DeepLab predictions collapsed to one class in 6 of 6 trials" in collapsed
    assert "<td class='verdict-not-supported'>not supported</td>" in collapsed
    healthy = build_report([studies["demo"][0].path])
    assert "<p class='warning'>" not in healthy and "<td class='verdict-not-supported'>" not in healthy


def test_report_cli_prints_one_line_per_finding(studies, tmp_path, capsys):
    study, frame = studies["collapsed"]
    assert main(["report", str(study.path), "-o", str(tmp_path / "report.html")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1] == "The paper's findings, checked on collapsed:"
    assert lines[2:] == findings_lines(frame)
    assert len(lines[2:]) == len(check_findings(frame)) == 11
    assert all(" -> " in line and "(" in line for line in lines[2:])
    assert any(line.startswith("DeepLab predictions span more than one class") and "-> not supported" in line
               for line in lines[2:])
