"""Estimators and measurements: Wolff's Gamma method, jackknife, reweighting ESS, summaries and plots.

Modules:

- ``observables.gamma``: autocorrelation analysis of Monte Carlo series with automatic windowing
  (U. Wolff, Comput. Phys. Commun. 156 (2004) 143), for primary and derived observables;
- ``observables.estimators``: blocked jackknife, reweighting effective sample size and
  self-normalised reweighted means;
- ``observables.measure``: Gamma-method summaries of many observables, the ``--json`` record and a
  plain-text table;
- ``observables.plots``: Monte Carlo histories, autocorrelation functions, τ_int(W), histograms and
  training curves, written as PNG files.

This package imports only ``lattice`` (besides numpy, scipy, matplotlib and torch), never ``flows`` or
``mcmc``, so a measurement script never pulls in training code.
"""
