"""Shared test helpers: the reference fixtures copied from the original implementations."""
from __future__ import annotations

import json
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "reference"


@lru_cache(maxsize=None)
def loss_manifest() -> dict:
    return json.loads((FIXTURES / "losses" / "manifest.json").read_text())["families"]


def loss_cases(family: str) -> list[str]:
    """Case names of one loss family (for ``pytest.mark.parametrize``)."""
    return list(loss_manifest()[family]["cases"])


@lru_cache(maxsize=None)
def _npz(name: str) -> dict:
    with np.load(FIXTURES / "losses" / name) as z:
        return {k: z[k] for k in z.files}


def load_loss_case(family: str, case: str):
    """Return ``(entry, arrays, tol)`` for a case; array keys drop the ``<case>/`` prefix."""
    fam = loss_manifest()[family]
    ent = fam["cases"][case]
    z = _npz(fam["npz"])
    n = len(case) + 1
    arrays = {k[n:]: z[k] for k in ent["arrays"] if k in z}
    tol = {k[n:]: v for k, v in ent["arrays"].items()}
    return ent, arrays, tol


def assert_close(actual, arrays: dict, tol: dict, name: str) -> None:
    """Compare to a fixture array with that array's own rtol/atol."""
    if isinstance(actual, torch.Tensor):
        actual = actual.detach().cpu().numpy()
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), arrays[name],
                               rtol=tol[name]["rtol"], atol=tol[name]["atol"], err_msg=name)


def make_weight(key: str, shape, conv_gain: float) -> np.ndarray:
    """Re-create a fixture weight from its key (see fixtures/reference/README.md)."""
    shape = tuple(shape)
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(zlib.crc32(key.encode())))
    if len(shape) >= 2:
        a = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        if len(shape) == 4:
            a = a * conv_gain
    elif key.endswith("running_var"):
        a = 0.5 + rng.random(shape)
    elif key.endswith("running_mean"):
        a = 0.1 * rng.standard_normal(shape)
    elif key.endswith("weight"):
        a = 1.0 + 0.1 * rng.standard_normal(shape)
    else:
        a = 0.1 * rng.standard_normal(shape)
    return a.astype(np.float32)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
