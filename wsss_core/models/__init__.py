"""Networks of the three stages: stride-8 backbones, the CAM network (with
SEAM's PCM), AffinityNet with random-walk propagation, and DeepLab-v1."""
from .affinity_net import AffinityNet, affinity_labels, affinity_loss, pair_offsets
from .backbones import BACKBONES, build_backbone, has_head_layer, max_head_blocks, output_strides
from .base import Backbone
from .cam_net import CAMNet, CAMOutput
from .deeplab import DeepLabV1
from .pcm import PixelCorrelationModule
from .random_walk import random_walk

__all__ = [
    "AffinityNet",
    "BACKBONES",
    "Backbone",
    "CAMNet",
    "CAMOutput",
    "DeepLabV1",
    "PixelCorrelationModule",
    "affinity_labels",
    "affinity_loss",
    "build_backbone",
    "has_head_layer",
    "max_head_blocks",
    "output_strides",
    "pair_offsets",
    "random_walk",
]
