"""Spectral clustering estimators: the eigsh baseline and the neural eigenfunction variants."""
