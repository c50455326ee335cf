"""Give any ``nn.Module`` the zoo's interface (``forward_features``, ``classifier``) with hooks.

A torchvision or timm network can then be a teacher or a student of every method in the
book: name its stem, stage and classifier submodules by dotted path, and
:class:`FeatureAdapter` records their outputs during one ordinary forward pass.
"""
from __future__ import annotations

from torch import Tensor, nn

from .features import Features


def _resolve(module: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path``; ValueError naming the top-level children if absent."""
    try:
        return module.get_submodule(path)
    except AttributeError:
        children = ", ".join(name for name, _ in module.named_children()) or "(none)"
        raise ValueError(f"{type(module).__name__} has no submodule {path!r}; "
                         f"its top-level children are: {children}") from None


class FeatureAdapter(nn.Module):
    """Wrap ``model`` so that ``forward_features(x) -> Features`` reads its named submodules.

    Args:
        model: any network mapping images ``(B, C, H, W)`` to logits ``(B, K)``; kept as
            ``self.model`` (its state-dict keys gain a ``model.`` prefix).
        stem: dotted path of the module whose output is ``Features.stem``.
        stages: dotted paths of the modules whose outputs are ``Features.stages``, in order.
        classifier: dotted path of the final ``nn.Linear``; its input is ``Features.pooled``
            ``(B, D)``.
        final_map: dotted path of the module whose output is ``Features.final_map``
            ``(B, D, h, w)``; defaults to the last stage.
        stages_preact: dotted paths for ``Features.stages_preact``; without them
            ``forward_features(x, preact=True)`` raises.

    Example: ``FeatureAdapter(torchvision.models.resnet18(num_classes=10), stem="relu",
    stages=["layer1", "layer2", "layer3", "layer4"], classifier="fc")``.
    """

    def __init__(self, model: nn.Module, stem: str, stages: list[str], classifier: str,
                 final_map: str | None = None, stages_preact: list[str] | None = None):
        super().__init__()
        if not stages:
            raise ValueError("FeatureAdapter needs at least one stage path")
        if stages_preact is not None and len(stages_preact) != len(stages):
            raise ValueError(f"stages_preact has {len(stages_preact)} paths but stages has {len(stages)}")
        self.model = model
        self.stem_path = stem
        self.stage_paths = list(stages)
        self.final_map_path = final_map or stages[-1]
        self.preact_paths = None if stages_preact is None else list(stages_preact)
        for path in [stem, *self.stage_paths, self.final_map_path, *(self.preact_paths or [])]:
            _resolve(model, path)
        head = _resolve(model, classifier)
        if not isinstance(head, nn.Linear):
            raise ValueError(f"classifier {classifier!r} is a {type(head).__name__}, not an nn.Linear")
        self.classifier_path = classifier

    @property
    def classifier(self) -> nn.Linear:
        """The wrapped model's final Linear."""
        return self.model.get_submodule(self.classifier_path)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K)``: the wrapped model's own forward, without hooks."""
        return self.model(x)

    def forward_features(self, x: Tensor, preact: bool = False) -> Features:
        """Run the wrapped model once and collect the named outputs into a :class:`Features`.

        Hooks live only for this call. A module called several times in one forward
        contributes its last output.
        """
        if preact and self.preact_paths is None:
            raise ValueError("this FeatureAdapter has no pre-activation paths; "
                             "pass stages_preact=[...] when creating it")
        wanted = {self.stem_path, self.final_map_path, *self.stage_paths, *(self.preact_paths if preact else [])}
        outputs: dict[str, Tensor] = {}

        def keep(path):
            return lambda module, inputs, output: outputs.__setitem__(path, output)

        handles = [self.model.get_submodule(p).register_forward_hook(keep(p)) for p in wanted]
        handles.append(self.classifier.register_forward_pre_hook(
            lambda module, inputs: outputs.__setitem__(self.classifier_path, inputs[0])))
        try:
            logits = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        missing = sorted((wanted | {self.classifier_path}) - outputs.keys())
        if missing:
            raise RuntimeError(f"modules not called during the forward pass: {', '.join(missing)}")
        return Features(
            stem=outputs[self.stem_path],
            stages=[outputs[p] for p in self.stage_paths],
            pooled=outputs[self.classifier_path],
            final_map=outputs[self.final_map_path],
            logits=logits,
            stages_preact=[outputs[p] for p in self.preact_paths] if preact else None)
