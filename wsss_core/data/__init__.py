"""Data: VOC-layout and COCO loaders, the synthetic VOC-layout generator,
training/evaluation transforms and `build_dataset(DataConfig, split)`."""

from wsss_core.data.coco import CocoDataset
from wsss_core.data.config import DataConfig, build_dataset, cached_synthetic_voc
from wsss_core.data.errors import DataError
from wsss_core.data.labels import labels_from_mask, read_label_file
from wsss_core.data.sample import Sample, SampleSource
from wsss_core.data.synth import SYNTH_CLASS_NAMES, SynthParams, render_image, write_synthetic_voc
from wsss_core.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Batch,
    ColorJitter,
    EvalTransform,
    TrainTransform,
    TransformedDataset,
    TransformedSample,
    collate_samples,
)
from wsss_core.data.verify import DataSummary, verify_dataset
from wsss_core.data.voc import VOC_CLASSES, VOCDataset, read_image, read_mask, voc_palette, write_mask

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SYNTH_CLASS_NAMES",
    "VOC_CLASSES",
    "Batch",
    "CocoDataset",
    "ColorJitter",
    "DataConfig",
    "DataError",
    "DataSummary",
    "EvalTransform",
    "Sample",
    "SampleSource",
    "SynthParams",
    "TrainTransform",
    "TransformedDataset",
    "TransformedSample",
    "VOCDataset",
    "build_dataset",
    "cached_synthetic_voc",
    "collate_samples",
    "labels_from_mask",
    "read_image",
    "read_label_file",
    "read_mask",
    "render_image",
    "verify_dataset",
    "voc_palette",
    "write_mask",
    "write_synthetic_voc",
]
