"""Lattice physics: geometry, actions, group operations, topology and exact results.

This package holds no ``torch.nn`` code; it is imported by ``flows``, ``mcmc`` and ``observables``.
"""
