"""Feature-map losses: CD (chapter 2) and the classic feature baselines of chapter 3.

Chapter 2 "CD": :func:`cd` and :class:`CDConnector`. Chapter 3 "DCD and RRD" uses the
RepDistiller baselines FitNet (:func:`hint`, :class:`ConvReg`), AT (:func:`at`), NST
(:func:`nst`), FSP (:func:`fsp`), AB (:func:`ab`, :class:`ABConnector`), FT (:func:`ft`,
:class:`Paraphraser`, :class:`Translator`) and VID (:class:`VID`).

Conventions: student side first, teacher side second; teacher inputs are detached; every
function and module computes in float32, also under ``torch.autocast``. Losses over stage
lists need lists of equal length: where the student and teacher have different numbers of
stages the caller chooses the aligned stages (RepDistiller's ``zip`` silently dropped the
surplus ones). Where a student and a teacher map differ in spatial size, AT, NST, FT and VID
adaptive-average-pool the larger map to the smaller size, as the reference code does; CD
compares spatial means, so sizes never matter there. Loss weights of the training scripts
are not applied here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._fp32 import fp32

__all__ = [
    "hint", "ConvReg", "at", "nst", "fsp", "ab", "ABConnector",
    "ft", "Paraphraser", "Translator", "VID", "cd", "CDConnector",
]


def _stage_pairs(feats_s, feats_t):
    """Zip student and teacher stage lists, detaching the teacher; lengths must agree."""
    if len(feats_s) != len(feats_t):
        raise ValueError(f"got {len(feats_s)} student and {len(feats_t)} teacher stages; "
                         "pass aligned lists of equal length")
    return [(s, t.detach()) for s, t in zip(feats_s, feats_t)]


def _pool_to_smaller(f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool the spatially larger map to the other's size (RepDistiller)."""
    if f_s.shape[-2:] == f_t.shape[-2:]:
        return f_s, f_t
    if f_s.shape[-2] > f_t.shape[-2]:
        return F.adaptive_avg_pool2d(f_s, f_t.shape[-2:]), f_t
    return f_s, F.adaptive_avg_pool2d(f_t, f_s.shape[-2:])


def _matched_stages(feats_s, feats_t):
    """Stage pairs (teacher detached) with the larger map of each pair pooled to the smaller."""
    return [_pool_to_smaller(s, t) for s, t in _stage_pairs(feats_s, feats_t)]


def _attention(f: Tensor, p: float) -> Tensor:
    """Spatial attention map ``normalize(mean_c f^p)`` flattened: ``(B, C, H, W) -> (B, H*W)``."""
    return F.normalize(f.pow(p).mean(1).flatten(1))


def _shape(shape) -> tuple[int, int, int]:
    """``(C, H, W)`` from a ``(C, H, W)`` or ``(N, C, H, W)`` shape."""
    c, h, w = tuple(shape)[-3:]
    return c, h, w


# --------------------------------------------------------------------------- FitNet

@fp32
def hint(f_s: Tensor, f_t: Tensor) -> Tensor:
    """FitNet hint loss (chapter 3 "DCD and RRD", baseline): ``mean (f_s - f_t)²``.

    Args:
        f_s: student map already through :class:`ConvReg`, typically ``(B, C, H, W)``.
        f_t: teacher map of the same shape (detached).

    Returns:
        Scalar mean squared error over every element. RepDistiller weight: 100.
    """
    if f_s.shape != f_t.shape:
        raise ValueError(f"hint needs equal shapes, got {tuple(f_s.shape)} and {tuple(f_t.shape)}; "
                         "map the student with ConvReg first")
    return F.mse_loss(f_s, f_t.detach())


class ConvReg(nn.Module):
    """FitNet regressor (chapter 3 "DCD and RRD", baseline): conv + BatchNorm (+ ReLU).

    The convolution maps the student map to the teacher's shape:
    3×3 stride-2 conv if ``H_s = 2·H_t``; 4×4 stride-2 transposed conv if ``2·H_s = H_t``;
    otherwise a ``(1+H_s-H_t) × (1+W_s-W_t)`` conv (1×1 for equal sizes). Convs have a bias.

    Args:
        s_shape: student map shape ``(C, H, W)`` (a leading batch size is ignored).
        t_shape: teacher map shape ``(C, H, W)``.
        use_relu: end with a ReLU (True for FitNet; False in AB's connector).

    ``forward(x)``: ``(B, C_s, H_s, W_s) -> (B, C_t, H_t, W_t)``, computed in float32.
    """

    def __init__(self, s_shape, t_shape, use_relu: bool = True):
        super().__init__()
        (s_c, s_h, s_w), (t_c, t_h, t_w) = _shape(s_shape), _shape(t_shape)
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise ValueError(f"ConvReg cannot map a {s_h}x{s_w} map to {t_h}x{t_w}: the student "
                             "map must be at least as large, or exactly half as large")
        self.bn = nn.BatchNorm2d(t_c)
        self.use_relu = use_relu

    @fp32
    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.use_relu else x


# --------------------------------------------------------------------------- AT, NST, FSP

@fp32
def at(feats_s: list[Tensor], feats_t: list[Tensor], p: float = 2) -> list[Tensor]:
    """Attention transfer (chapter 3 "DCD and RRD", baseline), one loss per stage.

    ``a(f) = normalize_L2(mean_c f^p)`` over the flattened spatial axis;
    ``loss_i = mean_{b, hw} (a(s_i) - a(t_i))²`` after pooling the larger map to the smaller.

    Args:
        feats_s: student stage maps ``(B, C_i, H_i, W_i)``; channels may differ from the teacher's.
        feats_t: teacher stage maps, same length (detached).
        p: power of the activations (2).

    Returns:
        List of scalar losses, one per stage (the training loop sums them; RepDistiller weight 1000).
    """
    return [(_attention(s, p) - _attention(t, p)).pow(2).mean() for s, t in _matched_stages(feats_s, feats_t)]


def _poly_kernel_mean(a: Tensor, b: Tensor) -> Tensor:
    """``mean_{b, i, j} (a_i · b_j)²`` over channel vectors ``(B, C_a, N)``, ``(B, C_b, N)``."""
    return torch.bmm(a, b.transpose(1, 2)).pow(2).mean()


@fp32
def nst(feats_s: list[Tensor], feats_t: list[Tensor]) -> list[Tensor]:
    """Neuron selectivity transfer (chapter 3 "DCD and RRD", baseline), one loss per stage.

    After pooling the larger map to the smaller, every channel is flattened over space and
    L2-normalised; with the polynomial kernel ``k(x, y) = (xᵀy)²`` over channel pairs,
    ``loss_i = mean k(t, t) + mean k(s, s) - 2·mean k(s, t)`` (squared MMD; means over the batch
    and all channel pairs).

    Args:
        feats_s: student stage maps ``(B, C_i, H_i, W_i)``.
        feats_t: teacher stage maps, same length (detached); channel counts may differ.

    Returns:
        List of scalar losses, one per stage (RepDistiller weight 50).
    """
    losses = []
    for s, t in _matched_stages(feats_s, feats_t):
        s, t = F.normalize(s.flatten(2), dim=2), F.normalize(t.flatten(2), dim=2)
        losses.append(_poly_kernel_mean(t, t) + _poly_kernel_mean(s, s) - 2 * _poly_kernel_mean(s, t))
    return losses


def _fsp_matrices(feats: list[Tensor]) -> list[Tensor]:
    """``G[b, i, j] = mean_hw next[b, i] · prev[b, j]`` for consecutive maps (larger pooled)."""
    mats = []
    for prev, nxt in zip(feats[:-1], feats[1:]):
        prev, nxt = (f.flatten(2) for f in _pool_to_smaller(prev, nxt))
        mats.append(torch.bmm(nxt, prev.transpose(1, 2)) / prev.shape[-1])
    return mats


@fp32
def fsp(feats_s: list[Tensor], feats_t: list[Tensor]) -> list[Tensor]:
    """Flow of solution procedure (chapter 3 "DCD and RRD", baseline), one loss per map pair.

    For each network and each pair of consecutive maps (the larger pooled to the smaller size)
    the FSP matrix ``G[b, i, j] = mean_hw next[b, i] · prev[b, j]`` is ``(B, C_next, C_prev)``;
    ``loss_i = mean (G_s,i - G_t,i)²``.

    Args:
        feats_s: student maps ``(B, C_i, H_i, W_i)`` (RepDistiller: stem + stages).
        feats_t: teacher maps, same length and the same channel count at every position
            (detached); spatial sizes may differ.

    Returns:
        List of ``len(feats) - 1`` scalar losses. Used in a 30-epoch init stage (weight 50).
    """
    pairs = _stage_pairs(feats_s, feats_t)
    if any(s.shape[1] != t.shape[1] for s, t in pairs):
        raise ValueError("fsp needs equal student and teacher channel counts at every position, got "
                         f"{[s.shape[1] for s, _ in pairs]} and {[t.shape[1] for _, t in pairs]}")
    mats = zip(_fsp_matrices([s for s, _ in pairs]), _fsp_matrices([t for _, t in pairs]))
    return [(g_s - g_t).pow(2).mean() for g_s, g_t in mats]


# --------------------------------------------------------------------------- AB

@fp32
def ab(feats_s: list[Tensor], feats_t: list[Tensor], margin: float = 1.0) -> list[Tensor]:
    """Activation-boundary loss (chapter 3 "DCD and RRD", baseline), one loss per stage.

    On pre-activation maps (student ones through :class:`ABConnector`), with ``m = margin``:
    ``ℓ_i = Σ (s+m)²·[s > -m ∧ t ≤ 0] + (s-m)²·[s ≤ m ∧ t > 0]`` (sum over every element),
    ``loss_i = 2^(i-n+1) · ℓ_i / B · 3/1000`` for stage ``i`` of ``n`` (the last stage has weight 1).

    Args:
        feats_s: student pre-activation maps, shaped like the teacher's ``(B, C_i, H_i, W_i)``.
        feats_t: teacher pre-activation maps, same length (detached).
        margin: the margin m (1.0).

    Returns:
        List of scalar losses. Used in a 30-epoch init stage only (weight 1).
    """
    pairs = _stage_pairs(feats_s, feats_t)
    n = len(pairs)
    losses = []
    for i, (s, t) in enumerate(pairs):
        on, off = (t > 0).float(), (t <= 0).float()
        alt = ((s + margin).pow(2) * ((s > -margin).float() * off)
               + (s - margin).pow(2) * ((s <= margin).float() * on))
        losses.append(alt.sum() * 2.0 ** (i - n + 1) / s.shape[0] * 3 / 1000)
    return losses


class ABConnector(nn.Module):
    """AB's student-side connectors (chapter 3 "DCD and RRD", baseline).

    Per stage: identity where the student and teacher shapes agree in channels and height,
    else a :class:`ConvReg` without ReLU (conv + BatchNorm), mapping to the teacher's shape.

    Args:
        s_shapes: student stage shapes ``(C, H, W)``.
        t_shapes: teacher stage shapes ``(C, H, W)``, same length.

    ``forward(feats_s)``: list of maps -> list of maps with the teacher's shapes (float32).
    """

    def __init__(self, s_shapes, t_shapes):
        super().__init__()
        if len(s_shapes) != len(t_shapes):
            raise ValueError(f"got {len(s_shapes)} student and {len(t_shapes)} teacher shapes")
        self.connectors = nn.ModuleList(
            nn.Identity() if _shape(s)[:2] == _shape(t)[:2] else ConvReg(s, t, use_relu=False)
            for s, t in zip(s_shapes, t_shapes))

    @fp32
    def forward(self, feats_s: list[Tensor]) -> list[Tensor]:
        return [c(f) for c, f in zip(self.connectors, feats_s)]


# --------------------------------------------------------------------------- FT

@fp32
def ft(factor_s: Tensor, factor_t: Tensor, p: int = 1) -> Tensor:
    """Factor transfer (chapter 3 "DCD and RRD", baseline), RepDistiller's version.

    ``F(x) = normalize_L2(mean_c x²)`` over the flattened spatial axis (channel-pooled, unlike
    the FT paper), after pooling the larger factor to the smaller size;
    ``loss = mean |F(s) - F(t)|`` for ``p = 1``, else ``mean (F(s) - F(t))^p``.

    Args:
        factor_s: :class:`Translator` output ``(B, C_s, H_s, W_s)``.
        factor_t: :class:`Paraphraser` factor of the teacher map ``(B, C_t, H_t, W_t)`` (detached).
        p: the distance exponent (1).

    Returns:
        Scalar loss, mean over ``B·H·W``. RepDistiller weight: 200.
    """
    s, t = _pool_to_smaller(factor_s, factor_t.detach())
    diff = _attention(s, 2) - _attention(t, 2)
    return diff.abs().mean() if p == 1 else diff.pow(p).mean()


def _conv_stack(channels, use_bn: bool, conv=nn.Conv2d) -> nn.Sequential:
    """Three 3×3 ``conv -> BN (or Identity) -> LeakyReLU(0.1)`` blocks through ``channels``.

    The Identity placeholder keeps RepDistiller's ``state_dict`` indices (0, 3, 6 for the convs).
    """
    layers = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [conv(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out) if use_bn else nn.Identity(),
                   nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """FT's teacher-side autoencoder (chapter 3 "DCD and RRD", baseline).

    Encoder: three 3×3 convs ``C -> C -> k·C -> k·C``; decoder: three 3×3 transposed convs
    ``k·C -> k·C -> C -> C``; each followed by (optional BN and) LeakyReLU(0.1). Pre-trained for
    30 epochs with ``mse(reconstruction, f_t)``, then frozen; its encoder gives the teacher factor.

    Args:
        t_channels: channels C of the teacher map.
        k: paraphrase rate, factor channels ``int(C·k)`` (0.5).
        use_bn: BatchNorm after each conv (False, as in RepDistiller).

    ``forward(f_t) -> (factor, reconstruction)``: ``(B, C, H, W) -> (B, kC, H, W), (B, C, H, W)``;
    ``factor(f_t)`` runs the encoder only. Both in float32.
    """

    def __init__(self, t_channels: int, k: float = 0.5, use_bn: bool = False):
        super().__init__()
        c, kc = t_channels, int(t_channels * k)
        self.encoder = _conv_stack((c, c, kc, kc), use_bn)
        self.decoder = _conv_stack((kc, kc, c, c), use_bn, nn.ConvTranspose2d)

    @fp32
    def factor(self, f_t: Tensor) -> Tensor:
        return self.encoder(f_t)

    @fp32
    def forward(self, f_t: Tensor) -> tuple[Tensor, Tensor]:
        factor = self.encoder(f_t)
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """FT's student-side encoder (chapter 3 "DCD and RRD", baseline), trained with the student.

    Three 3×3 convs ``C_s -> C_s -> k·C_t -> k·C_t``, each with BN and LeakyReLU(0.1).

    Args:
        s_channels: channels of the student map.
        t_channels: channels of the teacher map (the factor has ``int(C_t·k)`` channels).
        k: paraphrase rate (0.5).
        use_bn: BatchNorm after each conv (True, as in RepDistiller).

    ``forward(f_s)``: ``(B, C_s, H, W) -> (B, k·C_t, H, W)`` in float32.
    """

    def __init__(self, s_channels: int, t_channels: int, k: float = 0.5, use_bn: bool = True):
        super().__init__()
        kc = int(t_channels * k)
        self.encoder = _conv_stack((s_channels, s_channels, kc, kc), use_bn)

    @fp32
    def forward(self, f_s: Tensor) -> Tensor:
        return self.encoder(f_s)


# --------------------------------------------------------------------------- VID

class _VIDStage(nn.Module):
    """One stage of VID: a 1×1-conv regressor of the mean and a per-channel variance."""

    def __init__(self, s_channels: int, t_channels: int, init_var: float, eps: float):
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(s_channels, t_channels, 1, bias=False), nn.ReLU(),
            nn.Conv2d(t_channels, t_channels, 1, bias=False), nn.ReLU(),
            nn.Conv2d(t_channels, t_channels, 1, bias=False))
        # softplus(log_scale) + eps = init_var at the start
        self.log_scale = nn.Parameter(torch.full((t_channels,), math.log(math.expm1(init_var - eps))))
        self.eps = eps

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        var = (F.softplus(self.log_scale) + self.eps).view(1, -1, 1, 1)
        return (0.5 * ((self.regressor(f_s) - f_t).pow(2) / var + var.log())).mean()


class VID(nn.Module):
    """Variational information distillation (chapter 3 "DCD and RRD", baseline).

    Per stage i, after pooling the larger map to the smaller: ``μ = regressor_i(s_i)``
    (1×1 conv C_s→C_t, ReLU, 1×1 conv, ReLU, 1×1 conv; no biases),
    ``σ² = softplus(log_scale_i) + eps`` per channel (initial value ``init_var``),
    ``loss_i = mean_{b,c,h,w} ½ [(μ - t_i)² / σ² + log σ²]`` (Gaussian negative log-likelihood
    up to a constant).

    Args:
        s_channels: student stage channels.
        t_channels: teacher stage channels, same length.
        init_var: initial variance (5.0).
        eps: variance floor (1e-5).

    ``forward(feats_s, feats_t)`` -> list of scalar losses, one per stage (weight 1, summed).
    The stage modules are ``stages[i].regressor`` and ``stages[i].log_scale``.
    """

    def __init__(self, s_channels, t_channels, init_var: float = 5.0, eps: float = 1e-5):
        super().__init__()
        if len(s_channels) != len(t_channels):
            raise ValueError(f"got {len(s_channels)} student and {len(t_channels)} teacher stages")
        self.stages = nn.ModuleList(_VIDStage(s, t, init_var, eps) for s, t in zip(s_channels, t_channels))

    @fp32
    def forward(self, feats_s: list[Tensor], feats_t: list[Tensor]) -> list[Tensor]:
        if len(feats_s) != len(self.stages):
            raise ValueError(f"VID was built for {len(self.stages)} stages, got {len(feats_s)}")
        return [stage(s, t) for stage, (s, t) in zip(self.stages, _matched_stages(feats_s, feats_t))]


# --------------------------------------------------------------------------- CD

@fp32
def cd(feats_s: list[Tensor], feats_t: list[Tensor]) -> Tensor:
    """Channel distillation (chapter 2 "CD"): match the channel attention of every stage.

    ``w(f) = mean_hw f`` (global average pooling, ``(B, C)``);
    ``loss = Σ_i mean_{b,c} (w(s_i) - w(t_i))²`` (stages summed, unweighted; no normalisation).

    Args:
        feats_s: student stage maps already through :class:`CDConnector`, ``(B, C_i, H, W)``.
        feats_t: teacher stage maps, same length and channels (detached); spatial sizes may
            differ since only spatial means are compared.

    Returns:
        Scalar loss. Weight 6 in the CD recipe (×0.9 steps under EDT).
    """
    return sum(F.mse_loss(s.mean((2, 3)), t.mean((2, 3))) for s, t in _stage_pairs(feats_s, feats_t))


class CDConnector(nn.Sequential):
    """CD's student-side connector for one stage (chapter 2 "CD"): ``ReLU(BN(Conv1×1(x)))``.

    The 1×1 convolution has no bias. Args: ``in_channels`` (student stage), ``out_channels``
    (teacher stage). ``forward``: ``(B, C_s, H, W) -> (B, C_t, H, W)`` in float32.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())

    @fp32
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)
