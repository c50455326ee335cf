"""The uniform feature interface every kdlib model exposes (chapter 0, "the teachers of this profile").

A model's ``forward(x)`` returns logits; ``forward_features(x, preact=False)`` returns a
:class:`Features`. The fields mirror RepDistiller's ``is_feat``/``preact`` lists
(``feats = [stem, *stages, pooled]``) so that every method of the book reads the same
tensors the original code read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Features:
    """Intermediate tensors of one forward pass.

    Attributes:
        stem: output of the stem, ``(B, C0, H0, W0)`` (RepDistiller ``feats[0]``).
        stages: stage outputs, each ``(B, Ci, Hi, Wi)`` (``feats[1:-1]``), with the family's
            quirks kept (WRN stages are raw residual sums, MobileNetV2's linear bottlenecks).
        pooled: the classifier's input, ``(B, D)`` (``feats[-1]``).
        final_map: the tensor that is globally pooled into ``pooled``, ``(B, D, h, w)``
            (what SDD's pyramid reads).
        logits: ``(B, K)``.
        stages_preact: RepDistiller's ``preact=True`` stage tensors, filled only when
            ``forward_features(x, preact=True)`` was called.
    """

    stem: Tensor
    stages: list[Tensor]
    pooled: Tensor
    final_map: Tensor
    logits: Tensor
    stages_preact: list[Tensor] | None = field(default=None)

    def feats(self, preact: bool = False) -> list[Tensor]:
        """RepDistiller's ``feats`` list: ``[stem, *stages, pooled]`` (preact stages if asked)."""
        stages = self.stages_preact if preact else self.stages
        if stages is None:
            raise ValueError("preact stages were not computed; call forward_features(x, preact=True)")
        return [self.stem, *stages, self.pooled]
