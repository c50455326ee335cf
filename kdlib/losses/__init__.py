"""Every loss of the five papers and their baselines (the names the chapters use).

Stateless losses are pure functions ``loss(student..., teacher...)``; losses with state or
parameters are small ``nn.Module``s. Teacher-side inputs are treated as constants and every
loss computes in float32, also under autocast. Each docstring names the chapter deriving it.
"""
from .logits import *  # noqa: F401,F403
from .sdd import *  # noqa: F401,F403
from .features import *  # noqa: F401,F403
from .relations import *  # noqa: F401,F403
from .contrastive import *  # noqa: F401,F403
from .sskd import *  # noqa: F401,F403
