"""Periodic convolutional conditioner networks for lattice fields in D = 1, 2, 3, 4 dimensions.

Input and output are channel-first, ``(B, C, *L)``. Convolutions pad circularly, so the network
commutes with lattice translations (periodic boundary conditions). D ≤ 3 uses ``Conv{1,2,3}d``;
D = 4 uses :class:`CircularConv4d`, a sum of ``Conv3d`` over the kernel offsets in the 4th direction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class CircularConv4d(nn.Module):
    """4-D convolution with circular padding, ``(B, C_in, L0, L1, L2, L3) -> (B, C_out, *L)``.

    out(x) = Σ_o conv3d_o(in(·, ·, ·, x3 + o)) for offsets o ∈ [−k//2, k//2] along the last axis,
    each ``conv3d_o`` circular in the first three axes; the bias lives in the o = 0 term only.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.offsets = list(range(-(kernel_size // 2), kernel_size // 2 + 1))
        self.slices = nn.ModuleList(
            nn.Conv3d(
                in_channels,
                out_channels,
                kernel_size,
                padding=kernel_size // 2,
                padding_mode="circular",
                bias=(o == 0),
            )
            for o in self.offsets
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C_in, *L)`` with D = 4; returns ``(B, C_out, *L)``."""
        batch, _, l0, l1, l2, l3 = x.shape
        out = None
        for offset, conv in zip(self.offsets, self.slices, strict=True):
            rolled = torch.roll(x, shifts=-offset, dims=5)
            folded = rolled.permute(0, 5, 1, 2, 3, 4).reshape(batch * l3, -1, l0, l1, l2)
            term = conv(folded)
            out = term if out is None else out + term
        return out.reshape(batch, l3, -1, l0, l1, l2).permute(0, 2, 3, 4, 5, 1)


def make_conv(dim: int, in_channels: int, out_channels: int, kernel_size: int) -> nn.Module:
    """A translation-equivariant circular convolution for D = ``dim`` lattice axes."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size = {kernel_size} must be odd for a centred periodic convolution")
    if dim == 4:
        return CircularConv4d(in_channels, out_channels, kernel_size)
    if dim not in _CONVS:
        raise ValueError(f"convolutional conditioners support lattice dimension D = 1..4, not D = {dim}")
    return _CONVS[dim](
        in_channels, out_channels, kernel_size, padding=kernel_size // 2, padding_mode="circular"
    )


class ConvNet(nn.Module):
    """Periodic CNN ``(B, in_channels, *L) -> (B, out_channels, *L)``.

    Layers: conv → activation for each entry of ``hidden``, then a final conv whose weights and bias
    start at zero, so the coupling it drives starts as the identity map (stable early training).
    """

    def __init__(
        self,
        dim: int,
        in_channels: int,
        out_channels: int,
        hidden: Sequence[int],
        kernel_size: int = 3,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {sorted(ACTIVATIONS)}")
        channels = [in_channels, *hidden]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [make_conv(dim, c_in, c_out, kernel_size), ACTIVATIONS[activation]()]
        last = make_conv(dim, channels[-1], out_channels, kernel_size)
        for p in last.parameters():
            nn.init.zeros_(p)
        layers.append(last)
        self.net = nn.Sequential(*layers)
        self.autocast_dtype: torch.dtype | None = None  # set by flows.accel.training_accel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, in_channels, *L)``; returns ``(B, out_channels, *L)`` in ``x.dtype``.

        The convolutions run in the dtype of the network's own parameters, which may be lower than
        ``x.dtype`` (see :func:`conditioners_to`): a coupling's parameters are then computed in float32
        from its frozen inputs while the map and its log-det stay in float64. Forward and inverse see
        bit-identical frozen inputs, so they use identical parameters and the flow remains an exact
        bijection with an exact density.
        """
        compute = next(self.net[-1].parameters()).dtype
        if self.autocast_dtype is None:
            return self.net(x.to(compute)).to(x.dtype)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype):  # flows.accel: bf16 conditioners
            out = self.net(x.to(compute))
        return out.to(x.dtype)


def conditioners_to(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast every :class:`ConvNet` inside ``module`` to ``dtype``, in place; returns ``module``.

    Used by ``flows.model.Flow.as_float64`` to keep the conditioners in float32 inside a float64 map
    (cheaper proposals, same exactness; the cost is measured by ``runs/bench/flow_sampling_dtype.py``).
    """
    for net in module.modules():
        if isinstance(net, ConvNet):
            net.to(dtype)
    return module


def cpu_generator(generator: torch.Generator) -> torch.Generator:
    """``generator`` itself when it lives on the CPU, else a fresh CPU generator seeded with its seed
    (``initial_seed()``): initial weights are drawn on the CPU, so one seed gives the same weights on
    every device (the CUDA and CPU random streams differ)."""
    if generator.device.type == "cpu":
        return generator
    return torch.Generator().manual_seed(generator.initial_seed())


def _init_conv(conv: nn.Module, generator: torch.Generator, zero: bool) -> None:
    """Draw one conv unit's weights U(±1/√fan_in) and biases U(±1/√fan_in) (PyTorch's default
    bounds) on the CPU from the CPU ``generator`` and copy them to the parameters' device, or zero
    them; a :class:`CircularConv4d` counts all its slices in its fan-in."""
    parts = list(conv.slices) if isinstance(conv, CircularConv4d) else [conv]
    fan_in = len(parts) * parts[0].weight[0].numel()
    bound = 1.0 / fan_in**0.5
    with torch.no_grad():
        for part in parts:
            for p in part.parameters():
                if zero:
                    p.zero_()
                else:
                    drawn = torch.empty(p.shape, dtype=p.dtype).uniform_(-bound, bound, generator=generator)
                    p.copy_(drawn)


def reset_parameters(module: nn.Module, generator: torch.Generator | None) -> None:
    """Re-draw the conv parameters of every :class:`ConvNet` inside ``module`` from ``generator`` (None: a
    CPU generator seeded 0, the flow builders' default), keeping each final conv at zero. No global RNG
    is touched, so a flow's initial weights are a function of the generator state alone. The draws
    happen on the CPU (:func:`cpu_generator`), so a generator on any device and parameters on any device
    give the same weights for one seed; a non-CPU generator contributes its seed, not its current state,
    and is not advanced."""
    generator = cpu_generator(generator if generator is not None else torch.Generator().manual_seed(0))
    for net in module.modules():
        if not isinstance(net, ConvNet):
            continue
        units = [m for m in net.net if not isinstance(m, tuple(ACTIVATIONS.values()))]
        for i, conv in enumerate(units):
            _init_conv(conv, generator, zero=(i == len(units) - 1))
