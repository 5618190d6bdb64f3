"""Results and output folders: what interp writes and reads back.

- ``protocol``: the one result protocol (``save``/``load``/``to_dict``/``figures``), ``RESULTS``,
  the JSON and parquet writers;
- ``reading``: the one validating reader of every file interp reads back;
- ``folders``: output folders that never lose a user's file (manifest, checkpoints);
- ``atomic``: atomic file writes; ``strict_json``: JSON without NaN; ``versions``: what a
  result depends on.
"""
