"""Linear probes, directions and steering (``interp.probes``).

>>> from interp.probes import collect, probe_by_site, diff_of_means, steer      # doctest: +SKIP
>>> acts = collect(model, texts, labels, sites="blocks.*.hook_resid_post")       # doctest: +SKIP
>>> table = probe_by_site(acts)                                                   # doctest: +SKIP
"""

from interp.probes.collect import Activations, collect
from interp.probes.directions import diff_of_means, fit_rank1_das, interchange, pca_directions
from interp.probes.knob import KnobResult, knob
from interp.probes.knob_report import write_report as write_knob_report
from interp.probes.last_token import LastTokenRuns
from interp.probes.linear import ProbeResult, concept_depth_figure, fit_probe, probe_by_site
from interp.probes.steering import projection, steer

__all__ = [
    "Activations", "KnobResult", "LastTokenRuns", "ProbeResult", "collect", "concept_depth_figure", "diff_of_means", "fit_probe",
    "fit_rank1_das", "interchange", "knob", "pca_directions", "probe_by_site", "projection", "steer", "write_knob_report",
]
