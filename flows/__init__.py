"""Normalizing flows for lattice fields: pure invertible transforms, coupling layers, priors, the flow
model and reverse-KL training. Imports ``lattice`` only (never ``mcmc`` or ``observables``)."""
