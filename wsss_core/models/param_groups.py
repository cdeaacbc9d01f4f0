"""SGD parameter groups as in the reference codebases (psa, SEAM)."""
from __future__ import annotations

from torch import nn

from .base import Backbone

_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.SyncBatchNorm)


def reference_param_groups(
    pretrained: nn.Module, new_layers: list[nn.Module], lr: float, weight_decay: float
) -> list[dict]:
    """Split trainable parameters into SGD groups the way psa/SEAM do:

    backbone weights at lr with weight decay, backbone biases at 2x lr without
    it, new-layer weights at 10x lr with weight decay, new-layer biases at 20x lr
    without it. Normalisation parameters (frozen in the reference ResNet-38d,
    trainable in our other backbones) get their part's lr and no weight decay.
    Frozen parameters (requires_grad False) are left out; empty groups dropped.
    The trunk blocks a frozen backbone trains in its head (`Backbone.freeze(head_blocks=N)`)
    form their own "blocks_*" groups at the backbone's multipliers x its
    `head_blocks_lr_mult`, recorded as the group's "lr_scale" (which Adam keeps).
    Each group carries "name" and "lr_mult" (lr / base lr) for schedulers.
    """
    if lr <= 0 or weight_decay < 0:
        raise ValueError(f"lr must be > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
    blocks = tuple(pretrained.head_block_modules()) if isinstance(pretrained, Backbone) else ()
    scale = {"backbone": 1.0, "blocks": pretrained.head_blocks_lr_mult if blocks else 1.0, "new": 10.0}
    groups: dict[str, tuple[float, float, list]] = {
        f"{part}_{kind}": (scale[part] * mult, decay, [])
        for part in scale
        for kind, mult, decay in (("weight", 1.0, weight_decay), ("bias", 2.0, 0.0), ("norm", 1.0, 0.0))
    }
    in_blocks = {id(p) for block in blocks for p in block.parameters()}
    for part, modules in (("backbone", [pretrained]), ("new", new_layers)):
        for root in modules:
            for module in root.modules():
                for name, param in module.named_parameters(recurse=False):
                    if not param.requires_grad:
                        continue
                    kind = "norm" if isinstance(module, _NORMS) else ("bias" if name == "bias" else "weight")
                    groups[f"{'blocks' if id(param) in in_blocks else part}_{kind}"][2].append(param)
    return [
        {"name": name, "params": params, "lr": lr * mult, "lr_mult": mult, "weight_decay": wd,
         **({"lr_scale": scale["blocks"]} if name.startswith("blocks") else {})}
        for name, (mult, wd, params) in groups.items()
        if params
    ]
