"""nco.plotting."""
