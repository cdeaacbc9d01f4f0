"""The feature memo (runtime.feature_memo): a frozen backbone's maps are read
back exactly instead of recomputed, by another process too, and never for a
backbone that trains; in the pipeline, a second trial that differs only
downstream of frozen backbones reads its features and gets the results of a
run without the memo."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import torch

from wsss_core.models import build_backbone
from wsss_core.models.feature_memo import MEMO_ENV, STALE_CLAIM_SECONDS, FeatureMemo
from wsss_core.pipeline import run_pipeline

TINY = Path(__file__).resolve().parents[1] / "search_spaces" / "pipelines" / "tiny.yaml"
FROZEN = [f"{stage}.freeze_backbone=true" for stage in ("cam", "affinity", "segmentation")]


def _counting(backbone):
    calls = []
    compute = backbone.forward_stages

    def forward_stages(x):
        calls.append(x.shape)
        return compute(x)

    backbone.forward_stages = forward_stages
    return calls


def test_frozen_maps_are_read_back_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet_small", None).freeze()
    backbone.share_features(tmp_path)
    calls = _counting(backbone)
    x = torch.randn(2, 3, 32, 32)
    first = backbone.features(x, slice(-3, None))
    again = backbone.features(x.clone(), slice(-3, None))
    assert len(calls) == 1 and backbone.memo.hits == 1
    assert len(again) == 3 and all(torch.equal(a, b) for a, b in zip(first, again))
    backbone.features(x + 1e-3, slice(-3, None))
    backbone.features(x, slice(-1, None))
    assert len(calls) == 3, "another input or another choice of maps is computed"

    twin = build_backbone("resnet_small", None)
    twin.load_state_dict(backbone.state_dict())
    twin.eval().share_features(tmp_path)
    twin_calls = _counting(twin)
    with torch.no_grad():
        assert torch.equal(twin(x), first[-1]), "another process with the same weights reads the entry"
    assert twin_calls == []

    other = build_backbone("resnet_small", None).freeze()
    other.share_features(tmp_path)
    other_calls = _counting(other)
    other.features(x, slice(-3, None))
    assert len(other_calls) == 1 and other.memo.directory != backbone.memo.directory, "other weights, other entries"


def test_a_frozen_backbone_computes_its_fixed_maps_in_bfloat16_when_asked(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet_small", None).freeze()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        exact = backbone.features(x)[-1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = backbone.forward_stages(x)[-1].float()
        rounded = backbone.compute_fixed_in(torch.bfloat16).features(x)[-1]
    assert rounded.dtype == torch.float32 and torch.equal(rounded, expected)
    error = float((rounded - exact).norm() / exact.norm())
    assert 0 < error < 0.1, error

    trainable = build_backbone("resnet_small", None).compute_fixed_in(torch.bfloat16)
    trainable.load_state_dict(backbone.state_dict())
    with torch.no_grad():
        assert torch.equal(trainable.eval().features(x)[-1], exact), "weights that train are never rounded"

    backbone.share_features(tmp_path)
    backbone.features(x)
    twin = build_backbone("resnet_small", None).freeze()
    twin.load_state_dict(backbone.state_dict())
    twin.share_features(tmp_path)
    assert torch.equal(twin.features(x)[-1], exact) and twin.memo.misses == 1, "float32 never reads bfloat16 maps"


def _slow_maps(log: list[float]):
    def compute(x: torch.Tensor) -> list[torch.Tensor]:
        log.append(float(x.flatten()[0]))
        time.sleep(0.02)
        return [x * 2, x + 1]
    return compute


def test_processes_warming_the_same_inputs_split_them(tmp_path: Path) -> None:
    inputs = [torch.full((1, 3, 4, 4), float(i)) for i in range(40)]
    done: dict[str, list[float]] = {"a": [], "b": []}
    memos = {name: FeatureMemo(tmp_path, "weights") for name in done}

    def warm_all(name: str) -> None:
        for x in inputs:
            memos[name].warm(_slow_maps(done[name]), x, slice(-1, None))

    threads = [threading.Thread(target=warm_all, args=(name,)) for name in done]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(done["a"] + done["b"]) == list(range(40)), "each input computed exactly once"
    assert len(done["a"]) >= 5 and len(done["b"]) >= 5, f"both processes computed: {len(done['a'])}, {len(done['b'])}"
    reader: list[float] = []
    for x in inputs:
        assert torch.equal(memos["a"].maps(_slow_maps(reader), x, slice(-1, None))[0], x + 1)
    assert reader == [] and memos["a"].hits == 40


def test_use_waits_for_a_claimed_input_and_a_dead_claim_is_ignored(tmp_path: Path) -> None:
    memo = FeatureMemo(tmp_path, "weights")
    x = torch.ones(1, 3, 4, 4)
    path = tmp_path / "weights" / f"{memo.key(x, slice(-1, None))}.pt"
    path.parent.mkdir(parents=True)
    claim = path.with_suffix(".claim")
    claim.touch()
    other = FeatureMemo(tmp_path, "weights")
    finisher = threading.Timer(0.3, lambda: (other._store(path, [x * 5]), claim.unlink()))
    finisher.start()
    computed: list[float] = []
    assert torch.equal(memo.maps(_slow_maps(computed), x, slice(-1, None))[0], x * 5), "read what the claimer stored"
    assert computed == []
    finisher.join()

    y = torch.zeros(1, 3, 4, 4)
    dead = (tmp_path / "weights" / f"{memo.key(y, slice(-1, None))}.pt").with_suffix(".claim")
    dead.touch()
    old = time.time() - STALE_CLAIM_SECONDS - 1
    os.utime(dead, (old, old))
    memo.warm(_slow_maps(computed), y, slice(-1, None))
    assert computed == [0.0] and not dead.exists(), "a claim left by a dead process does not block the input"


def test_a_training_backbone_never_uses_the_memo(tmp_path: Path) -> None:
    backbone = build_backbone("resnet_small", None)
    backbone.share_features(tmp_path)
    calls = _counting(backbone)
    x = torch.randn(2, 3, 32, 32)
    backbone.train()
    backbone(x), backbone(x)
    backbone.eval()
    backbone(x)  # eval mode with gradients on: the weights may still change
    assert len(calls) == 3 and backbone.memo.hits + backbone.memo.misses == 0
    assert not any(tmp_path.rglob("*.pt"))


def test_a_second_trial_reads_the_frozen_features_and_matches_a_run_without(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(MEMO_ENV, str(tmp_path / "memo"))
    first = run_pipeline(TINY, tmp_path / "first", cache_dir=tmp_path / "cache", progress=False,
                         overrides=[*FROZEN, "runtime.feature_memo=true", "cam.lam=0.0"])
    second = run_pipeline(TINY, tmp_path / "second", cache_dir=tmp_path / "cache", progress=False,
                          overrides=[*FROZEN, "runtime.feature_memo=true", "cam.lam=1.0"])
    assert [r.cache_hit for r in second.stages] == [False, False, False]
    log = (tmp_path / "second" / "pipeline.log").read_text()
    for stage in ("cam", "affinity", "segmentation"):
        line = next(line for line in log.splitlines() if f"{stage}: " in line and "feature forwards" in line)
        read, total = (int(word) for word in line.split(": ", 2)[-1].split()[:3:2])
        assert read == total > 0, line
        skipped = f"{stage}: the feature memo holds these batches already"
        assert skipped in log, f"the second trial draws the same batches: no warm-up pass at {stage}"
        assert skipped not in (tmp_path / "first" / "pipeline.log").read_text()
    plain = run_pipeline(TINY, tmp_path / "plain", cache_dir=tmp_path / "plain-cache", progress=False,
                         overrides=[*FROZEN, "cam.lam=1.0"])
    for memo, without in zip(second.stages, plain.stages):
        assert memo.key == without.key and memo.metrics == without.metrics
    assert first.stages[0].metrics != second.stages[0].metrics, "the trials differ downstream of the features"


def test_with_a_trainable_head_the_memo_holds_the_trunk_and_the_head_still_learns(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", None).freeze(train_head=True)
    initial = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.share_features(tmp_path)
    x = torch.randn(2, 3, 64, 64)
    first = backbone.features(x)
    first[0].mean().backward()
    conv = backbone.head_modules()[0]
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0, "gradients reach the head through stored maps"
    stored = [torch.load(path, weights_only=True) for path in tmp_path.rglob("*.pt")]
    assert [m.shape[1] for entry in stored for m in entry] == [320], "the memo holds the head's input, not its output"
    with torch.no_grad():
        conv.weight.add_(0.1)
        again = backbone.features(x)[0]
    assert backbone.memo.hits == 1 and not torch.allclose(again, first[0]), "the trained head runs on the read-back trunk"

    trained = build_backbone("efficientnet_lite0", None)
    trained.load_state_dict(backbone.state_dict())
    trained.freeze(train_head=True).share_features(tmp_path)
    with torch.no_grad():
        assert torch.equal(trained.features(x)[0], again) and trained.memo.hits == 1, \
            "a model with another trained head (another trial, inference) reads the same trunk entries"

    dropped = build_backbone("efficientnet_lite0", None)
    dropped.load_state_dict(initial)
    dropped.drop_head().freeze().share_features(tmp_path)
    with torch.no_grad():
        assert torch.equal(dropped.features(x)[0], stored[0][0]) and dropped.memo.hits == 1, \
            "a model on the trunk's map (segmentation.backbone_head false) reads the same trunk entries as they are"

    whole = build_backbone("efficientnet_lite0", None).freeze()
    whole.load_state_dict(initial)
    whole.share_features(tmp_path)
    whole.features(x)
    assert whole.memo.misses == 1, "same weights, but a frozen head's entries (the whole backbone's maps) are not the trunk's"


def test_with_trainable_head_blocks_the_memo_holds_the_maps_before_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", None).freeze(train_head=True, head_blocks=1)
    initial = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.share_features(tmp_path)
    x = torch.randn(2, 3, 64, 64)
    backbone.features(x)[0].mean().backward()
    block = backbone.net._blocks[15]._project_conv.weight
    assert block.grad is not None and block.grad.abs().sum() > 0, "gradients reach block 15 through stored maps"
    stored = [torch.load(path, weights_only=True) for path in tmp_path.rglob("*.pt")]
    assert [m.shape[1] for entry in stored for m in entry] == [192], "the memo holds block 14's output"
    with torch.no_grad():
        block.add_(0.1)
        trained = backbone.features(x)[0]
    assert backbone.memo.hits == 1, "a trained block 15 reads the same trunk entries"

    head_only = build_backbone("efficientnet_lite0", None)
    head_only.load_state_dict(initial)
    head_only.freeze(train_head=True).share_features(tmp_path)
    with torch.no_grad():
        head_only.features(x)
    assert head_only.memo.misses == 1 and head_only.memo.hits == 0, "another split point has entries of its own"
    assert not torch.allclose(head_only.features(x)[0], trained)


def test_warming_inference_stores_exactly_the_inputs_multiscale_inference_reads(tmp_path: Path) -> None:
    import logging

    import numpy as np

    from wsss_core.data import Sample
    from wsss_core.models import DeepLabV1
    from wsss_core.pipeline.inference import multiscale_probs, warm_inference_memo
    from wsss_core.pipeline.training import Runtime

    torch.manual_seed(0)
    runtime = Runtime(device=torch.device("cpu"), amp=False, channels_last=True, seed=0, loader_workers=0,
                      progress=False, log=logging.getLogger("test"))
    net = runtime.to_device(DeepLabV1(build_backbone("resnet_small", None).freeze(), 3, head_channels=8, dilation=2)).eval()
    net.backbone.share_features(tmp_path)
    rng = np.random.default_rng(0)
    samples = [Sample(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), None, np.ones(2, np.float32), f"s{i}")
               for i in range(3)]
    options = dict(scales=[0.5, 1.0], flip=True, runtime=runtime)
    warm_inference_memo(net, samples, desc="warm", **options)
    assert net.backbone.memo.warmed == len(samples) * 2, "one entry per image and scale (the flip rides along)"
    for sample in samples:
        multiscale_probs(lambda x: net(x), sample, mean=net.backbone.mean, std=net.backbone.std, **options)
    assert (net.backbone.memo.hits, net.backbone.memo.misses) == (6, 0), "inference reads every input the warm pass stored"


def test_deeplab_trains_on_the_cam_stage_crops_so_the_memo_serves_both(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(MEMO_ENV, str(tmp_path / "memo"))
    pretrained = [f"{stage}.{key}" for stage in ("cam", "segmentation")
                  for key in ("backbone=efficientnet_lite0", "weights=default")]
    run_pipeline(TINY, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False,
                 overrides=[*FROZEN, *pretrained, "runtime.feature_memo=true"])
    log = (tmp_path / "run" / "pipeline.log").read_text()
    line = next(line for line in log.splitlines() if "segmentation: " in line and "feature forwards" in line)
    read, total = (int(word) for word in line.split(": ", 2)[-1].split()[:3:2])
    assert read == total > 0 and "(0 computed here" in line, line
