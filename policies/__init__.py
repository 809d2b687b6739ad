"""nco.policies."""
