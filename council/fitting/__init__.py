"""Fitting the archetypes' judges: heads over the shared encoder, learnt from the vendored training data."""
