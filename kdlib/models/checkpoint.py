"""Load community checkpoints (RepDistiller, SSKD, DataParallel) into zoo models.

The formats met in the wild: ``{"model": state_dict, ...}`` (RepDistiller/CRD teachers),
``{"state_dict": state_dict, ...}`` (SSKD), a bare state dict, keys prefixed ``module.``
(saved from ``DataParallel``), and SSKD's MobileNetV2 whose classifier is a bare Linear
(``classifier.weight`` where RepDistiller has ``classifier.0.weight``). Files are read with
``weights_only=True``: nothing in them is executed.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn

from ..io import load_checkpoint

_WRAPPER_KEYS = ("model", "state_dict")
_DATA_PARALLEL = "module."
_SHOWN = 5  # how many offending keys an error message lists


def load_weights(model: nn.Module, source: str | os.PathLike | Mapping[str, Any],
                 strict: bool = True) -> nn.Module:
    """Copy a checkpoint's weights into ``model`` and return ``model``.

    Args:
        model: the network to fill (e.g. from :func:`kdlib.models.create_model`).
        source: a checkpoint path, or a checkpoint already loaded into a dict.
        strict: require the checkpoint's keys to equal the model's (as ``load_state_dict``).

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, or holds non-tensor objects.
        ValueError: no state dict found, missing or unexpected keys (with ``strict``), or
            shape mismatches (a wrong number of classes is named as such).
        TypeError: ``source`` is neither a path nor a dict.
    """
    if isinstance(source, (str, os.PathLike)):
        checkpoint = load_checkpoint(source)
    elif isinstance(source, Mapping):
        checkpoint = source
    else:
        raise TypeError(f"source must be a checkpoint path or a dict, got {type(source).__name__}")
    expected = model.state_dict()
    state = _normalise_keys(_unwrap(checkpoint), expected)
    if strict:
        _check_keys(state, expected)
    _check_shapes(state, expected, _classifier_keys(model, expected))
    model.load_state_dict(state, strict=strict)
    return model


def _unwrap(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: under ``model`` or ``state_dict``, or the dict itself."""
    for key in _WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    not_tensors = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"checkpoint holds no state dict: expected tensors under 'model', 'state_dict' or "
                         f"at the top level, found non-tensor entries {_few(not_tensors)}")
    return dict(checkpoint)


def _normalise_keys(state: dict[str, torch.Tensor],
                    expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a DataParallel ``module.`` prefix and map SSKD's ``classifier.*`` to ``classifier.0.*``."""
    if state and all(k.startswith(_DATA_PARALLEL) for k in state) and \
            not any(k.startswith(_DATA_PARALLEL) for k in expected):
        state = {k[len(_DATA_PARALLEL):]: v for k, v in state.items()}
    renamed = {}
    for key, value in state.items():
        indexed = key.replace("classifier.", "classifier.0.", 1)
        if key.startswith("classifier.") and key not in expected and indexed in expected:
            key = indexed  # SSKD's MobileNetV2 declares its classifier as a bare Linear
        renamed[key] = value
    return renamed


def _check_keys(state: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {_few(unexpected)})")
        raise ValueError(f"checkpoint does not match the model: {'; '.join(parts)} keys. "
                         "Is it for another architecture? Pass strict=False to load the common keys.")


def _check_shapes(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                  classifier_keys: set[str]) -> None:
    wrong = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if not wrong:
        return
    for key in (k for k in wrong if k in classifier_keys):
        got, want = state[key].shape[0], expected[key].shape[0]
        if got != want:
            raise ValueError(f"checkpoint classifier has {got} classes but the model has {want}; "
                             f"create the model with num_classes={got}")
    details = ", ".join(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                        for k in wrong[:_SHOWN])
    raise ValueError(f"checkpoint shapes differ from the model's in {len(wrong)} tensors ({details})")


def _classifier_keys(model: nn.Module, expected: Mapping[str, torch.Tensor]) -> set[str]:
    """State-dict keys of ``model.classifier``'s weight and bias (found by storage, whatever the key)."""
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Linear):
        return set()
    pointers = {p.data_ptr() for p in head.parameters()}
    return {k for k, v in expected.items() if v.data_ptr() in pointers}


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOWN]) + (", ..." if len(keys) > _SHOWN else "")
