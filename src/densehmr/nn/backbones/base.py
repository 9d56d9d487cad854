"""What every backbone shares: multi-scale outputs and optionally frozen normalization statistics."""

from __future__ import annotations

from torch import nn


class Backbone(nn.Module):
    """An image encoder returning feature maps at several strides.

    Input: (B, 3, H, W) RGB normalized with the ImageNet mean and std.
    Output of forward: a list of (B, out_channels[k], ceil(H / out_strides[k]), ceil(W / out_strides[k])).

    norm_eval: keep every BatchNorm in eval mode while training, so its running statistics stay those
    of the pretrained weights (useful for the small per-GPU batches of dense heads).
    head_prefixes: state-dict prefixes of the classification heads found in published checkpoints of
    this architecture; load_backbone_weights drops them when the model does not have them. A backbone
    built with fewer stages (num_stages < 4: no stride-32 level, for light heads) adds the prefixes of
    the stages it leaves out, so that full checkpoints load into it.
    """

    head_prefixes: tuple[str, ...] = ()
    STAGES = (2, 3, 4)  # num_stages a backbone can be built with: outputs at strides 4 .. 4 * 2^(n - 1)

    @classmethod
    def check_stages(cls, num_stages: int, classifier: bool = False) -> int:
        """num_stages, if the backbone can be built with it (a classifier reads the stride-32 level)."""
        if num_stages not in cls.STAGES:
            raise ValueError(f"backbone.num_stages must be one of {cls.STAGES}, got {num_stages!r}")
        if classifier and num_stages < 4:
            raise ValueError(f"a {cls.__name__} classifier needs all 4 stages (num_stages=4)")
        return num_stages

    def __init__(self, out_channels: list[int], out_strides: list[int], norm_eval: bool = False) -> None:
        super().__init__()
        self.out_channels = list(out_channels)
        self.out_strides = list(out_strides)
        self.norm_eval = norm_eval

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self
