"""The common backbone interface and loading of local weight files."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .feature_memo import FeatureMemo, weights_fingerprint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """A feature extractor with output stride `stride` (8, or 16 where built so).

    Subclasses implement `forward_stages`. Attributes:
      stride: the output stride of the final map.
      out_channels: channels of the final map (= stage_channels[-1]).
      stage_channels: channels of each map `forward_stages` returns; the last
        three maps are at the output stride (AffinityNet and PCM use them).
      mean, std: the RGB normalisation the backbone expects (inputs in [0, 1]
        are normalised as (x - mean) / std before `forward`).

    A backbone with a head layer (a last per-location layer after its trunk,
    e.g. EfficientNet's 1x1 head conv) also implements `head_modules`,
    `trunk_stages` and `head`, and sets `trunk_channels`, so a frozen backbone
    can keep that layer trainable (`freeze(train_head=True)`) and a model can
    read the trunk's map instead (`drop_head()`). One whose last blocks come
    after its last stage map sets `max_head_blocks`, so a frozen backbone can
    train those blocks with its head (`freeze(train_head=True, head_blocks=N)`).
    """

    stage_channels: tuple[int, ...]
    stride: int = 8
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    frozen: bool = False
    head_trains: bool = False
    head_dropped: bool = False
    trunk_channels: int = 0
    max_head_blocks: int = 0
    """How many of the trunk's last blocks `freeze(head_blocks=...)` can move into the head."""
    head_blocks: int = 0
    head_blocks_lr_mult: float = 1.0
    """The lr of the trainable blocks relative to the rest of the backbone's (param groups read it)."""
    memo: FeatureMemo | None = None
    fixed_dtype: torch.dtype | None = None
    """Autocast dtype of a frozen backbone's fixed part (`compute_fixed_in`); None: float32."""

    def freeze(self, train_head: bool = False, head_blocks: int = 0, head_blocks_lr_mult: float = 1.0) -> Backbone:
        """Fixed pretrained features: no gradients, and BatchNorm in eval mode
        (its ImageNet statistics) even while the model around it trains.

        train_head: the head layer (`head_modules`) keeps its gradients: a
        trainable per-location non-linearity on the fixed trunk, which a
        linear classifier on fixed features lacks (its BatchNorm statistics
        stay fixed, its affine parameters train). ValueError for a backbone
        without a head layer.
        head_blocks: with train_head, the trunk's last N blocks join the head
        and train too (BatchNorm statistics fixed), at head_blocks_lr_mult x
        the backbone's lr: spatial layers that can move, which a per-location
        head lacks. The trunk (and the feature memo) then ends before them.
        ValueError unless 0 <= N <= `max_head_blocks` (N > 0: with train_head).
        """
        if train_head and not self.head_modules():
            raise ValueError(f"{type(self).__name__} has no head layer to train; use train_head=False")
        if train_head and self.head_dropped:
            raise ValueError(f"{type(self).__name__}'s head layer was dropped; use train_head=False")
        if not 0 <= head_blocks <= (self.max_head_blocks if train_head else 0):
            allowed = f"0-{self.max_head_blocks}" if train_head and self.max_head_blocks else "0"
            raise ValueError(f"head_blocks={head_blocks} is invalid for {type(self).__name__} with "
                             f"train_head={train_head}; allowed: {allowed}")
        if head_blocks_lr_mult <= 0:
            raise ValueError(f"head_blocks_lr_mult={head_blocks_lr_mult} is invalid; allowed: a number > 0")
        self.frozen = True
        self.head_trains = train_head
        self.head_blocks = head_blocks
        self.head_blocks_lr_mult = head_blocks_lr_mult
        self.requires_grad_(False)
        for module in self.head_modules() if train_head else ():
            module.requires_grad_(True)
        return self.eval()

    def drop_head(self) -> Backbone:
        """Skip the head layer: the last map becomes the trunk's (`trunk_channels`;
        efficientnet_lite0: the last MBConv block's 320 channels), as segmentation
        encoders use EfficientNet (the 1x1 head conv feeds ImageNet's classifier).
        Call before building layers on `out_channels`; the head's weights stay
        (unused, no gradients). ValueError for a backbone without a head layer."""
        if not self.head_modules():
            raise ValueError(f"{type(self).__name__} has no head layer to drop")
        self.head_dropped = True
        self.stage_channels = (*self.stage_channels[:-1], self.trunk_channels)
        for module in self.head_modules():
            module.requires_grad_(False)
        return self

    def head_modules(self) -> tuple[nn.Module, ...]:
        """The modules of the head layer, the `head_blocks` trunk blocks moved into it first
        (empty: the backbone has none)."""
        return ()

    def head_block_modules(self) -> tuple[nn.Module, ...]:
        """The trunk blocks moved into the head (`freeze(head_blocks=N)`); empty for N = 0."""
        return ()

    def trunk_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """forward_stages(x) with the head's input in place of the last map (backbones with a head layer)."""
        raise NotImplementedError(f"{type(self).__name__} has no head layer")

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The head layer: the trunk's last map -> the last map of forward_stages."""
        raise NotImplementedError(f"{type(self).__name__} has no head layer")

    def compute_fixed_in(self, dtype: torch.dtype | None) -> Backbone:
        """Run the fixed part of a frozen backbone (the trunk, or all of it) under
        torch.autocast(dtype), e.g. torch.bfloat16 (None: float32); its maps come
        back as float32. Call before `share_features` (memo entries are kept apart
        by dtype). A backbone that trains ignores it."""
        self.fixed_dtype = dtype
        return self

    def share_features(self, directory: Path) -> FeatureMemo:
        """Serve fixed feature maps from a FeatureMemo in `directory`, keyed by
        the current weights (attach after loading them). With a trainable head
        the memo holds the trunk's maps, keyed by the trunk's weights alone
        (a trained head reads the same entries; head blocks, left out of that
        key, give each split point its own), and the head runs on them; with
        a dropped head the same trunk entries are the maps."""
        if self.head_trains or self.head_dropped:
            key, extra = weights_fingerprint(self, skip=self.head_modules()), f"stride {self.stride}, trunk"
        else:
            key, extra = weights_fingerprint(self), f"stride {self.stride}"
        if self.fixed_dtype is not None:
            extra += f", computed in {self.fixed_dtype}"
        self.memo = FeatureMemo(directory, key, extra=extra)
        return self.memo

    def train(self, mode: bool = True) -> Backbone:
        return super().train(mode and not self.frozen)

    @property
    def out_channels(self) -> int:
        return self.stage_channels[-1]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B,3,H,W] -> list of feature maps, coarsest last (at `stride`)."""
        raise NotImplementedError

    def features(self, x: torch.Tensor, which: slice = slice(-1, None)) -> list[torch.Tensor]:
        """forward_stages(x)[which] (`which` runs to the last map); read from
        `memo` when one is attached and the maps are fixed: eval mode, and
        frozen or without gradients. With a trainable head only the trunk's
        maps are fixed: they come from the memo and the head runs on them."""
        compute = self._fixed_part()
        fixed = not self.training and (self.frozen or not torch.is_grad_enabled())
        maps = compute(x)[which] if self.memo is None or not fixed else self.memo.maps(compute, x, which)
        return [*maps[:-1], self.head(maps[-1])] if self.head_trains else maps

    @torch.no_grad()
    def warm_features(self, x: torch.Tensor, which: slice = slice(-1, None)) -> None:
        """Store the fixed maps of features(x, which) in the attached memo ahead
        of use, unless stored or claimed by another process (no-op without a
        memo or when the maps are not fixed)."""
        if self.memo is not None and not self.training and self.frozen:
            self.memo.warm(self._fixed_part(), x, which)

    def _fixed_part(self) -> Callable[[torch.Tensor], list[torch.Tensor]]:
        compute = self.trunk_stages if self.head_trains or self.head_dropped else self.forward_stages
        if self.fixed_dtype is None or not self.frozen:
            return compute
        dtype = self.fixed_dtype

        def in_dtype(x: torch.Tensor) -> list[torch.Tensor]:
            with torch.autocast(x.device.type, dtype=dtype):
                maps = compute(x)
            return [m.float() for m in maps]
        return in_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,H,W] -> [B, out_channels, ~H/stride, ~W/stride]."""
        return self.features(x)[0]

    def load_weights(self, path: str | Path) -> None:
        """Load a local state dict with exactly this backbone's key names
        (BatchNorm `num_batches_tracked` counters may be absent)."""
        load_strict(self, read_state_dict(path), str(path))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file (a state dict, or a checkpoint holding one under
    "state_dict" or "model"); one-line ValueError when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds here; report one line
        raise ValueError(f"cannot read weights file {path}: {type(error).__name__}: {error}".splitlines()[0]) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `module` requiring exactly matching keys and shapes;
    otherwise a one-line ValueError naming `source` and the first offending keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"weights {source} do not match {type(module).__name__}: "
            f"missing keys {missing[:3]} ({len(missing)} in all), "
            f"unexpected keys {unexpected[:3]} ({len(unexpected)} in all)"
        )
    wrong = [k for k in state if own[k].shape != state[k].shape]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"weights {source} do not match {type(module).__name__}: key {k} has shape "
            f"{tuple(state[k].shape)}, expected {tuple(own[k].shape)} ({len(wrong)} mismatched)"
        )
    module.load_state_dict(state, strict=False)
