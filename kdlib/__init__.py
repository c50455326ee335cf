"""kdlib: knowledge distillation for image classification, and the library behind the KD book.

Modules, in the order data flows through them:
``data`` (uint8 datasets on the device, DeviceLoader) -> ``models`` (the CIFAR zoo with
``forward_features``) -> ``losses`` (pure functions and small modules) -> ``methods``
(registry: name -> losses + auxiliary modules + schedule) -> ``train`` (Trainer) ->
``results`` (run records, train-or-load, tables) -> ``plots`` / ``reported`` (the book).
"""

__version__ = "0.1.0"
