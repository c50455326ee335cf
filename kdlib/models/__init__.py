"""The CIFAR model zoo, parameter-compatible with RepDistiller's (chapter 0).

Every model: ``model(x) -> logits``; ``model.forward_features(x, preact=False) -> Features``;
``model.classifier`` is the final ``nn.Linear``. Models outside the zoo get the same interface
through :class:`FeatureAdapter`.
"""
from .features import Features
from .registry import arch_of, create_model, list_models, register_model
from . import resnet, wrn, vgg, mobilenetv2, shufflenet, resnetv2  # noqa: F401  (register the zoo)
from .adapter import FeatureAdapter
from .checkpoint import load_weights

__all__ = ["Features", "arch_of", "create_model", "list_models", "register_model", "FeatureAdapter", "load_weights"]
