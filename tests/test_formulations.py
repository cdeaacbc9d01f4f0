"""CAM-stage formulations against independent re-derivations of the reference
code on the same inputs (arvijj/icam train_cam.py, infer_cam.py, eval_cam.py,
network/resnet38_cam.py, tool/probutils.py; YudeWang/SEAM train_SEAM.py,
infer_SEAM.py, network/resnet38_SEAM.py): BCE classes and smoothing, the
SEAM-mode losses, the PCM input, CAM suppression and the background rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss_core.aggregation import classification_loss
from wsss_core.formulations import (
    FORMULATIONS,
    CamSettings,
    icam_finalize,
    icam_loss,
    icam_pixel_maps,
    seam_finalize,
    seam_loss,
    seam_pixel_maps,
)
from wsss_core.models import CAMNet, build_backbone
from wsss_core.models.cam_net import CAMOutput, seam_normalized_cams
from wsss_core.pipeline.config import ConfigError, load_config
from wsss_core.pipeline.stage_cam import cam_label

EPS = 1e-3  # tool/probutils.py probs_to_logits


def _rel(got, want) -> float:
    return abs(float(got) - float(want)) / abs(float(want))


def _probs_to_logits(p):
    return torch.log(p * (1 - EPS) + EPS) - torch.log(1 - p * (1 - EPS))


def _labels(batch=2, classes=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    fg = (torch.rand(batch, classes - 1, generator=gen) > 0.5).double()
    fg[:, 0] = 1.0
    return torch.cat([torch.ones(batch, 1, dtype=torch.float64), fg], dim=1)


def _output(batch, classes, h, w, seed) -> CAMOutput:
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, classes, h, w, generator=gen, dtype=torch.float64)
    refined = 3 * torch.randn(batch, classes, h, w, generator=gen, dtype=torch.float64)
    return CAMOutput(logits, logits.softmax(1), refined)


# --- BCE classes and smoothing (train_cam.py) ---------------------------------------


def test_gap_term_is_foreground_soft_margin_of_the_mean_logits():
    out, labels = _output(2, 5, 6, 7, 1), _labels()
    ours = classification_loss(out.logits, out.probs, labels, lam=0.0, pooling="gap", eps=EPS, pooling_background=False)
    want = F.multilabel_soft_margin_loss(F.adaptive_avg_pool2d(out.logits, 1)[:, 1:, 0, 0], labels[:, 1:])
    assert _rel(ours, want) < 1e-5


def test_gmp_term_is_all_class_soft_margin_of_smoothed_max_probabilities():
    out, labels = _output(2, 5, 6, 7, 2), _labels(seed=1)
    ours = classification_loss(out.logits, out.probs, labels, lam=0.0, pooling="gmp", eps=EPS, pooling_background=True)
    want = F.multilabel_soft_margin_loss(_probs_to_logits(F.adaptive_max_pool2d(out.probs, 1))[:, :, 0, 0], labels)
    assert _rel(ours, want) < 1e-5


def test_sampling_term_is_foreground_soft_margin_of_smoothed_sampled_probabilities():
    out, labels = _output(2, 5, 6, 7, 3), _labels(seed=2)
    index = torch.randint(0, 42, (2, 5, 4), generator=torch.Generator().manual_seed(0))

    def fixed(logits, probs, *, num_samples, generator, eps=0.0):  # the draw of probutils.sample_probs, fixed
        from wsss_core.aggregation import smooth_probs
        return smooth_probs(probs.flatten(2).gather(2, index), eps)

    ours = classification_loss(out.logits, out.probs, labels, lam=1.0, sampling=fixed, num_samples=4, eps=EPS,
                               sampling_background=False)
    drawn = torch.gather(out.probs.reshape(2 * 5, 42), 1, index.reshape(10, 4)).view(2, 5, 4)
    want = F.multilabel_soft_margin_loss(_probs_to_logits(drawn)[:, 1:, :], labels[:, 1:, None])
    assert _rel(ours, want) < 1e-5


# --- icam training loss (train_cam.py, lam = 0: deterministic) -----------------------


@pytest.mark.parametrize("pooling", ["gap", "gmp"])
def test_icam_loss_matches_train_cam(pooling):
    out1, out2, labels = _output(2, 5, 10, 12, 4), _output(2, 5, 3, 4, 5), _labels(seed=3)
    parts = icam_loss(out1, out2, labels, CamSettings(lam=0.0, pooling=pooling), None)
    lab = labels[:, :, None, None]
    cls = 0.0
    for o in (out1, out2):
        if pooling == "gap":
            cls = cls + F.multilabel_soft_margin_loss(F.adaptive_avg_pool2d(o.logits, 1)[:, 1:], lab[:, 1:])
        else:
            cls = cls + F.multilabel_soft_margin_loss(_probs_to_logits(F.adaptive_max_pool2d(o.probs, 1)), lab)
        rv = F.softmax(o.refined, dim=1)
        cls = cls + F.multilabel_soft_margin_loss(_probs_to_logits(F.adaptive_max_pool2d(rv, 1)), lab)
    cam1 = F.interpolate(out1.probs, (3, 4), mode="bilinear", align_corners=True)
    rv1 = F.interpolate(F.softmax(out1.refined, 1), (3, 4), mode="bilinear", align_corners=True)
    cam2, rv2 = out2.probs, F.softmax(out2.refined, 1)
    er = sum(torch.mean(torch.abs(a - b)) for a, b in ((cam1, cam2), (rv1, rv2), (cam1, rv1), (cam2, rv2)))
    ecr = torch.mean(torch.abs(cam1 - rv2)) + torch.mean(torch.abs(cam2 - rv1))
    assert _rel(parts["cls"] + parts["pcm"], cls) < 1e-5
    assert _rel(parts["er"], er) < 1e-5 and _rel(parts["ecr"], ecr) < 1e-5


def test_icam_er_and_ecr_are_not_detached():
    out1, out2 = _output(1, 3, 6, 6, 6), _output(1, 3, 2, 2, 7)
    logits = out1.logits.clone().requires_grad_()
    out1 = CAMOutput(logits, logits.softmax(1), out1.refined)
    parts = icam_loss(out1, out2, _labels(1, 3), CamSettings(lam=0.0), None)
    (parts["er"] + parts["ecr"]).backward()
    assert logits.grad.abs().sum() > 0


# --- SEAM training loss (train_SEAM.py, at the stride-8 maps) ------------------------


def _seam_max_norm(p, e=1e-5):
    p = F.relu(p)
    n, c = p.shape[:2]
    max_v = torch.max(p.view(n, c, -1), dim=-1)[0].view(n, c, 1, 1)
    min_v = torch.min(p.view(n, c, -1), dim=-1)[0].view(n, c, 1, 1)
    return F.relu(p - min_v - e) / (max_v - min_v + e)


def _seam_max_onehot(x):
    x = x.clone()
    x_max = torch.max(x[:, 1:], dim=1, keepdim=True)[0]
    x[:, 1:][x[:, 1:] != x_max] = 0
    return x


def _seam_min_pool(x):
    n, _, h, w = x.shape
    k = h * w // 4
    y = torch.topk(torch.max(x, dim=1)[0].view(n, -1), k=k, dim=-1, largest=False)[0]
    return torch.sum(F.relu(y)) / (k * n)


def test_seam_loss_matches_train_seam():
    out1, out2, labels = _output(2, 5, 10, 10, 8), _output(2, 5, 3, 3, 9), _labels(seed=4)
    parts = seam_loss(out1, out2, labels, CamSettings(lam=0.0), None)
    lab = labels[:, :, None, None]
    cls = (F.multilabel_soft_margin_loss(F.adaptive_avg_pool2d(out1.logits, 1)[:, 1:], lab[:, 1:])
           + F.multilabel_soft_margin_loss(F.adaptive_avg_pool2d(out2.logits, 1)[:, 1:], lab[:, 1:])) / 2
    rvmin = (_seam_min_pool((out1.refined * lab)[:, 1:]) + _seam_min_pool((out2.refined * lab)[:, 1:])) / 2
    cam1 = F.interpolate(_seam_max_norm(out1.logits), (3, 3), mode="bilinear", align_corners=True) * lab
    rv1 = F.interpolate(_seam_max_norm(out1.refined), (3, 3), mode="bilinear", align_corners=True) * lab
    cam2, rv2 = _seam_max_norm(out2.logits) * lab, _seam_max_norm(out2.refined) * lab
    er = torch.mean(torch.abs(cam1[:, 1:] - cam2[:, 1:]))
    cam1, cam2 = cam1.clone(), cam2.clone()
    cam1[:, 0] = 1 - torch.max(cam1[:, 1:], dim=1)[0]
    cam2[:, 0] = 1 - torch.max(cam2[:, 1:], dim=1)[0]
    k = int(5 * 3 * 3 * 0.2)
    ecr = (torch.mean(torch.topk(torch.abs(_seam_max_onehot(cam2) - rv1).view(2, -1), k=k, dim=-1)[0])
           + torch.mean(torch.topk(torch.abs(_seam_max_onehot(cam1) - rv2).view(2, -1), k=k, dim=-1)[0]))
    assert _rel(parts["cls"], cls) < 1e-5 and _rel(parts["pcm"], rvmin) < 1e-5
    assert _rel(parts["er"], er) < 1e-5 and _rel(parts["ecr"], ecr) < 1e-5


def test_seam_naive_variants_differ_from_seam():
    out1, out2, labels = _output(2, 5, 8, 8, 10), _output(2, 5, 3, 3, 11), _labels(seed=5)
    base = seam_loss(out1, out2, labels, CamSettings(lam=0.0), None)["cls"]
    naive = seam_loss(out1, out2, labels, CamSettings(lam=0.8, naive=True), torch.Generator().manual_seed(0))["cls"]
    assert abs(float(base) - float(naive)) > 1e-3


# --- PCM input (network/resnet38_cam.py vs resnet38_SEAM.py) -------------------------


@pytest.mark.parametrize("formulation", ["icam", "seam"])
def test_pcm_input_follows_the_formulation(formulation):
    torch.manual_seed(0)
    net = CAMNet(build_backbone("resnet_small"), 4, mode="seam", pcm_source=FORMULATIONS[formulation].pcm_source).eval()
    x = torch.randn(1, 3, 48, 56)
    torch.set_grad_enabled(False)
    try:
        out = net(x)
        stages = net.backbone.forward_stages(x)
    finally:
        torch.set_grad_enabled(True)
    pcm = net.pcm
    h, w = stages[-2].shape[-2:]
    x_s = F.interpolate(x, (h, w), mode="bilinear", align_corners=True)
    f = torch.cat([x_s, F.relu(pcm.proj_low(stages[-3])), F.relu(pcm.proj_high(stages[-2]))], dim=1)
    f = pcm.embed(f).view(1, -1, h * w)
    f = f / (torch.norm(f, dim=1, keepdim=True) + 1e-5)
    aff = F.relu(torch.matmul(f.transpose(1, 2), f))
    aff = aff / (torch.sum(aff, dim=1, keepdim=True) + 1e-5)
    if formulation == "icam":
        cam = out.logits
    else:  # resnet38_SEAM.py cam_d_norm
        cam_d = F.relu(out.logits)
        cam_d_max = torch.max(cam_d.view(1, 4, -1), dim=-1)[0].view(1, 4, 1, 1) + 1e-5
        cam = F.relu(cam_d - 1e-5) / cam_d_max
        cam[:, 0] = 1 - torch.max(cam[:, 1:], dim=1)[0]
        cam_max = torch.max(cam[:, 1:], dim=1, keepdim=True)[0]
        cam[:, 1:][cam[:, 1:] < cam_max] = 0
        assert torch.allclose(seam_normalized_cams(out.logits), cam, rtol=1e-5, atol=1e-7)
    want = torch.matmul(cam.reshape(1, 4, -1), aff).view(1, 4, h, w)
    assert float(((out.refined - want).norm() / want.norm()).detach()) < 1e-5


# --- CAM inference and the background rule (infer_cam.py, eval_cam.py, infer_SEAM.py) --


def _passes(seed, count=3, classes=5, h=9, w=11):
    return [_output(1, classes, h, w, seed + i) for i in range(count)]


def test_icam_inference_averages_cam_and_pcm_then_suppresses_and_max_normalises():
    passes, present = _passes(20), np.array([1, 3])
    keep = torch.tensor([0, *present])
    ours = icam_finalize(torch.stack([icam_pixel_maps(o, keep, False)[0] for o in passes]).mean(0)[1:])
    label = torch.zeros(5, dtype=torch.float64)
    label[keep] = 1
    cams = []
    for o in passes:  # infer_cam.py _work (sizes equal, no flip)
        cam = 0.5 * F.softmax(o.logits, 1) + 0.5 * F.softmax(o.refined, 1)
        cam = cam * label.view(1, 5, 1, 1)
        cam = cam / torch.maximum(torch.tensor(1e-8), cam.sum(1, keepdim=True))
        cams.append(cam[0, 1:].numpy())
    norm_cam = np.mean(cams, axis=0)
    norm_cam[norm_cam != norm_cam.max(axis=0, keepdims=True)] = 0
    norm_cam = norm_cam / (norm_cam.max(axis=(1, 2), keepdims=True) + 1e-5)
    want = torch.from_numpy(norm_cam[present - 1])
    assert float((ours - want).norm() / want.norm()) < 1e-5
    assert ((ours > 0).sum(0) <= 1).all()  # one class per pixel


def test_background_rule_is_eval_cams_one_minus_sum():
    passes, present = _passes(30), np.array([2, 4])
    keep = torch.tensor([0, *present])
    fg = icam_finalize(torch.stack([icam_pixel_maps(o, keep, False)[0] for o in passes]).mean(0)[1:])
    ours = cam_label(fg.float().numpy(), present, 5, "one_minus_sum", 0.2)
    tensor = np.zeros((5, 9, 11), np.float32)  # eval_cam.py, npy without CRF
    for i, c in enumerate(present):
        tensor[c] = fg[i].float().numpy()
    tensor[0] = 1.0 - tensor.sum(axis=0)
    want = np.argmax(tensor, axis=0).astype(np.uint8)
    assert (ours == want).all() and len(np.unique(want)) > 1


def test_seam_inference_is_min_max_normalised_pcm_output():
    passes, present = _passes(40), np.array([1, 2])
    keep = torch.tensor([0, *present])
    ours = seam_finalize(torch.stack([seam_pixel_maps(o, keep, False)[0] for o in passes]).mean(0)[1:])
    sum_cam = np.sum([o.refined[0, 1:].numpy() for o in passes], axis=0)[present - 1] / len(passes)
    sum_cam[sum_cam < 0] = 0
    cam_max = np.max(sum_cam, (1, 2), keepdims=True)
    cam_min = np.min(sum_cam, (1, 2), keepdims=True)
    sum_cam[sum_cam < cam_min + 1e-5] = 0
    want = np.maximum((sum_cam - cam_min - 1e-5) / (cam_max - cam_min + 1e-5), 0)  # clamped: see seam_finalize
    assert float(np.linalg.norm(ours.numpy() - want) / np.linalg.norm(want)) < 1e-5


# --- config -----------------------------------------------------------------------------


def test_formulation_defaults_and_seam_constraints():
    cam = load_config({}).cam
    assert (cam.formulation, cam.bce_eps, cam.bce_background, cam.bg, cam.lam) == ("icam", 1e-3, ("gmp",), "one_minus_sum", 0.8)
    seam = load_config({"cam.formulation": "seam", "cam.lam": 0.0, "cam.fsl": False}).cam
    assert seam.formulation == "seam"
    with pytest.raises(ConfigError, match="cam.naive=False"):
        load_config({"cam.formulation": "seam", "cam.lam": 0.8})
    with pytest.raises(ConfigError, match="cam.pooling='gmp'"):
        load_config({"cam.formulation": "seam", "cam.lam": 0.0, "cam.fsl": False, "cam.pooling": "gmp"})
    with pytest.raises(ConfigError, match="cam.formulation='psa'"):
        load_config({"cam.formulation": "psa"})
