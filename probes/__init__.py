"""Linear probes, directions and steering (installed as ``interp.probes``)."""
