"""The shared library of the sample functions."""
