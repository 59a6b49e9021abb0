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
    """

    n_layers: int = 16
    hidden: tuple[int, ...] = (8, 8)
    kernel_size: int = 3
    activation: str = "tanh"
    bins: int = 8
    offset_order: str = "increasing"
    init: str = "identity"

    # the scalar-flow keys ``coupling`` and ``bound`` are accepted and ignored
    _accepts = "SU(N) flows accept"
    _ignored = ("coupling", "bound")

    def __post_init__(self) -> None:
        check_conditioner(self)
        if self.bins < 1:
            raise ValueError(f"flow.bins = {self.bins}: expected an integer >= 1")
        check_choice("offset_order", self.offset_order, OFFSET_ORDERS)
        check_choice("init", self.init, ("identity", "wilson"))
