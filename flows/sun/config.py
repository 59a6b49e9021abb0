"""Architecture of the SU(N) spectral flows (``flows.sun.flow``): the card's ``flow:`` keys."""

from __future__ import annotations

from dataclasses import dataclass

from flows.config import MappingConfig, check_choice, check_conditioner
from flows.masks import OFFSET_ORDERS


@dataclass(frozen=True)
class SUNFlowConfig(MappingConfig):
    """Architecture of an SU(N) spectral flow: ``n_layers`` couplings (multiples of 4·D visit every link
    equally often), conditioner CNN ``hidden``/``kernel_size``/``activation``, ``bins`` spline bins, and
    ``offset_order``, the cycle of mask offsets: ``"increasing"`` (0, 1, 2, 3) or ``"decreasing"``
    (0, 3, 2, 1), in which each layer's passive plaquettes (rows o − 1) are ones no earlier layer of the
    pass has shaped yet (``flows.masks.layer_schedule``).

    ``init``: ``"identity"`` (every coupling starts as the identity, so a new flow samples Haar) or
    ``"wilson"`` (each layer that is the first to shape its active plaquettes starts at the spline that
    best maps a Haar loop to the one-plaquette density ∝ e^{(β/N) Re tr W}, ``flows.sun.starts``;
    N = 2, 3). In 4D one pass of 16 layers shapes four of the six planes; 32 layers shape all six.

    ``stick_basis``: K, the number of features cos(jπ b_{k−1}), j < K, of the previous stick fraction
    on which the spline of stick k depends (``flows.spectral.conditional_params``); 1 moves each stick on
    its own, which cannot represent the SU(N ≥ 3) one-plaquette density: the Wilson start then leaves
    5.3 % of the one-loop log-weight variance, 4.5 of the 6.2 of 4⁴ SU(3) at β = 1; K = 2 leaves 0.16 %
    (``flows.sun.starts``). No effect for N = 2.
    """

    n_layers: int = 16
    hidden: tuple[int, ...] = (8, 8)
    kernel_size: int = 3
    activation: str = "tanh"
    bins: int = 8
    offset_order: str = "increasing"
    init: str = "identity"
    stick_basis: int = 1

    # the scalar-flow keys ``coupling`` and ``bound`` are accepted and ignored
    _accepts = "SU(N) flows accept"
    _ignored = ("coupling", "bound")
    _added = {"stick_basis": 1}

    def __post_init__(self) -> None:
        check_conditioner(self)
        if self.bins < 1:
            raise ValueError(f"flow.bins = {self.bins}: expected an integer >= 1")
        check_choice("offset_order", self.offset_order, OFFSET_ORDERS)
        check_choice("init", self.init, ("identity", "wilson"))
        if self.stick_basis < 1:
            raise ValueError(f"flow.stick_basis = {self.stick_basis}: expected an integer >= 1")
