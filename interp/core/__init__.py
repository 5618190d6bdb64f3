"""The hook core: a real Hugging Face model with hooks at named sites.

- ``model``: ``Model`` (tokenizer, adapter, ``trace``, ``run_with_cache``, ``generate``);
  ``inputs``: prompts, token ids and batches turned into one padded batch;
- ``sites``: the site grammar (TransformerLens names, globs, short names) and the axes table;
- ``tracing``: ``Trace``, hooks installed and always removed; ``interventions``: edits applied
  as a value passes a site; ``attention`` and ``masks``: our attention function and its mask;
- ``patterns`` and ``lens``: read-outs of a trace; ``kv_cache``: one way to call a cached forward.
"""
