"""nco.baselines."""
