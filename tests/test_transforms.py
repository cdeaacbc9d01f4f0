"""Training/evaluation transforms, the seeded Dataset wrapper and collation."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from wsss_core.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitter,
    EvalTransform,
    Sample,
    TrainTransform,
    TransformedDataset,
    collate_samples,
    voc_palette,
)
from wsss_core.data.transforms import _shift_hue

MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None]
STD = torch.tensor(IMAGENET_STD)[:, None, None]


def _sample(height: int = 60, width: int = 90, seed: int = 0, with_mask: bool = True) -> Sample:
    """An image whose colours are the VOC palette colours of its mask (blocks of classes 0..4)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 5, size=(6, 9))
    mask = np.kron(blocks, np.ones((height // 6, width // 9), dtype=np.int64))
    image = voc_palette()[mask].copy()
    image[mask == 0] = 200  # background grey, distinct from every class colour
    labels = np.zeros(4, dtype=np.float32)
    labels[np.unique(mask[mask > 0]) - 1] = 1
    return Sample(image=image, mask=mask if with_mask else None, labels=labels, name=f"img{seed}")


def _decode(rgb: torch.Tensor) -> np.ndarray:
    """Map rgb [3,h,w] in [0,1] back to the class whose colour is nearest."""
    colours = voc_palette()[:5].astype(np.float64)
    colours[0] = 200
    pixels = rgb.permute(1, 2, 0).numpy().astype(np.float64) * 255
    return np.argmin(((pixels[:, :, None, :] - colours) ** 2).sum(-1), axis=-1)


def test_train_transform_is_deterministic_under_a_seed() -> None:
    transform = TrainTransform(48, resize_long=(60, 120))
    sample = _sample()
    a, b = transform(sample, np.random.default_rng(7)), transform(sample, np.random.default_rng(7))
    assert torch.equal(a.image, b.image) and torch.equal(a.rgb, b.rgb) and torch.equal(a.mask, b.mask)
    c = transform(sample, np.random.default_rng(8))
    assert not torch.equal(a.image, c.image)


def test_output_shapes_types_and_normalisation() -> None:
    out = TrainTransform(40, resize_long=(50, 70))(_sample(), 0)
    assert out.image.shape == (3, 40, 40) and out.image.dtype == torch.float32
    assert out.rgb.shape == (3, 40, 40) and out.mask.shape == (40, 40) and out.mask.dtype == torch.int64
    assert 0 <= out.rgb.min() and out.rgb.max() <= 1
    torch.testing.assert_close(out.image, (out.rgb - MEAN) / STD)
    assert out.labels.dtype == torch.float32 and out.name == "img0"


def test_small_images_are_padded_with_zero_image_and_void_mask() -> None:
    out = TrainTransform(64, resize_long=(30, 30), flip=False, color_jitter=None)(_sample(60, 90), 3)
    valid = out.mask != 255
    rows, cols = valid.any(1).nonzero().squeeze(1), valid.any(0).nonzero().squeeze(1)
    assert (cols.max() - cols.min() + 1, rows.max() - rows.min() + 1) == (30, 20)  # long side resized to 30
    padding = ~valid
    assert padding.sum() == 64 * 64 - 30 * 20
    assert out.image[:, padding].abs().max() < 1e-6
    torch.testing.assert_close(out.rgb[:, padding], MEAN.expand(3, 64, 64)[:, padding])


def test_resize_long_side_range_is_respected() -> None:
    transform = TrainTransform(200, resize_long=(70, 110), flip=False, color_jitter=None)
    lengths = set()
    for seed in range(20):
        valid = transform(_sample(60, 90), seed).mask != 255
        lengths.add(int(valid.any(0).sum()))
    assert min(lengths) >= 70 and max(lengths) <= 110 and len(lengths) > 5


def test_flip_and_crop_move_image_and_mask_together() -> None:
    transform = TrainTransform(48, resize_long=(90, 90), color_jitter=None)
    sample = _sample()
    flipped = set()
    for seed in range(12):
        out = transform(sample, seed)
        valid = out.mask != 255
        agree = (_decode(out.rgb)[valid.numpy()] == out.mask[valid].numpy()).mean()
        assert agree > 0.97  # only resampling at block edges may differ
        reference = TrainTransform(48, resize_long=(90, 90), flip=False, color_jitter=None)(sample, seed)
        flipped.add(not torch.equal(out.mask, reference.mask))
    assert flipped == {True, False}


def test_color_jitter_changes_colours_only() -> None:
    sample = _sample()
    plain = TrainTransform(48, resize_long=None, flip=False, color_jitter=None)(sample, 5)
    jittered = TrainTransform(48, resize_long=None, flip=False)(sample, 5)
    assert not torch.allclose(plain.rgb, jittered.rgb, atol=0.02)
    assert torch.equal(plain.mask, jittered.mask)
    with pytest.raises(ValueError, match="hue=0.7 is invalid"):
        ColorJitter(hue=0.7)


def test_hue_shift_rotates_the_colour_circle_within_8_bit_rounding() -> None:
    red = Image.fromarray(np.full((4, 4, 3), (255, 0, 0), dtype=np.uint8))
    for fraction, expected in ((1 / 3, (0, 255, 0)), (-1 / 3, (0, 0, 255))):  # 85 of 256 hue steps: within 6 levels
        assert np.abs(np.asarray(_shift_hue(red, fraction), dtype=np.int64) - expected).max() <= 6
    pixels = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    for fraction in (0.0, 0.07, -0.1):
        turn = round(fraction * 255) / 256  # the 8-bit hue step torchvision's adjust_hue takes on PIL images
        exact = np.array([[colorsys.hsv_to_rgb((h + turn) % 1, s, v) for h, s, v in
                           (colorsys.rgb_to_hsv(*(px / 255)) for px in row)] for row in pixels]) * 255
        error = np.abs(np.asarray(_shift_hue(Image.fromarray(pixels), fraction), dtype=np.float64) - exact)
        assert error.mean() < 0.7 and error.max() < 10  # PIL's own 8-bit HSV round trip: 0.62-0.68 and 6-9


def test_eval_transform_normalises_and_scales() -> None:
    sample = _sample(60, 90)
    out = EvalTransform()(sample)
    torch.testing.assert_close(out.rgb, torch.from_numpy(sample.image).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(out.image, (out.rgb - MEAN) / STD)
    assert torch.equal(out.mask, torch.from_numpy(sample.mask))
    half = EvalTransform(scale=0.5)(sample)
    assert half.image.shape == (3, 30, 45) and half.mask.shape == (30, 45)
    with pytest.raises(ValueError, match="scale=0 is invalid"):
        EvalTransform(scale=0)


def test_invalid_transform_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="crop_size=0 is invalid"):
        TrainTransform(0)
    with pytest.raises(ValueError, match=r"resize_long=\(9, 3\) is invalid"):
        TrainTransform(8, resize_long=(9, 3))


def _loader_outputs(dataset: TransformedDataset, workers: int, epoch: int) -> list[torch.Tensor]:
    dataset.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=3, num_workers=workers, collate_fn=collate_samples)
    return [torch.cat([batch.image.flatten(), batch.mask.flatten().float()]) for batch in loader]


def test_dataloader_with_workers_is_deterministic() -> None:
    samples = [_sample(seed=i) for i in range(6)]
    dataset = TransformedDataset(samples, TrainTransform(32, resize_long=(40, 80)), seed=11)
    serial = _loader_outputs(dataset, 0, epoch=0)
    parallel = _loader_outputs(dataset, 2, epoch=0)
    assert len(serial) == 2 and all(torch.equal(a, b) for a, b in zip(serial, parallel))
    next_epoch = _loader_outputs(dataset, 2, epoch=1)
    assert not torch.equal(serial[0], next_epoch[0])


def test_collate_stacks_and_handles_missing_masks() -> None:
    transform = TrainTransform(24, resize_long=(30, 40))
    batch = collate_samples([transform(_sample(seed=i), i) for i in range(4)])
    assert batch.image.shape == (4, 3, 24, 24) and batch.rgb.shape == (4, 3, 24, 24)
    assert batch.mask.shape == (4, 24, 24) and batch.labels.shape == (4, 4)
    assert batch.names == ["img0", "img1", "img2", "img3"]
    unlabelled = collate_samples([transform(_sample(seed=i, with_mask=False), i) for i in range(2)])
    assert unlabelled.mask is None and unlabelled.image.shape == (2, 3, 24, 24)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_moves_to_gpu_with_pinned_memory() -> None:
    samples = [_sample(seed=i) for i in range(4)]
    dataset = TransformedDataset(samples, TrainTransform(24, resize_long=(30, 40)))
    loader = DataLoader(dataset, batch_size=2, collate_fn=collate_samples, pin_memory=True)
    batch = next(iter(loader))
    assert batch.image.is_pinned()
    on_gpu = batch.to("cuda", non_blocking=True)
    assert on_gpu.image.is_cuda and on_gpu.mask.is_cuda and on_gpu.labels.is_cuda
    torch.testing.assert_close(on_gpu.image.cpu(), batch.image)
