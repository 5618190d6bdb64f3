"""Pure tensor reductions over attention and unembedding (installed as ``interp.kernels``)."""
