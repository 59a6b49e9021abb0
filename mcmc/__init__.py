"""Markov chain kernels, the ensemble driver, HDF5 storage, run cards and the command line."""
