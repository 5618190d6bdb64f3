"""Patching, ablation, knockout, attribution and the ICL circuit (``interp.circuits``).

>>> from interp.circuits import activation_patching, attribution_patching, knockout, icl_circuit  # doctest: +SKIP
>>> res = activation_patching(model, clean, corrupted, logit_diff(good, bad), sites=["z"])        # doctest: +SKIP
>>> res.heatmap("z").show()                                                                        # doctest: +SKIP
"""

from interp.circuits.ablation import ablate_heads, ablation_scan
from interp.circuits.attribution import attribution_patching, check_against_patching
from interp.circuits.graph import Circuit, build_circuit
from interp.circuits.icl import icl_circuit, kernel_alignment
from interp.circuits.knockout import edges_mask, knockout, run_with_knockout
from interp.circuits.patching import PatchingResult, activation_patching, logit_diff
from interp.circuits.report import ICLResult

__all__ = [
    "Circuit", "ICLResult", "PatchingResult", "ablate_heads", "ablation_scan", "activation_patching",
    "attribution_patching", "build_circuit", "check_against_patching", "edges_mask", "icl_circuit",
    "kernel_alignment", "knockout", "logit_diff", "run_with_knockout",
]
