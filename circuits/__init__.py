"""Patching, ablation, knockout, attribution and the ICL circuit (installed as ``interp.circuits``)."""
