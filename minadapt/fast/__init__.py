"""The fast versions of the reference ops in `minadapt.nn`, each tested equal to its reference.

Each module here computes what its namesake in `nn/` computes, with less work or better memory
traffic: cache-sized blocks and a float32 erf (gelu, layernorm, attention), contiguous W^T copies
of frozen weights (linear), cheaper dropout masks, the [CLS]-only last layer and attention that
never forms keys and values (cls_layer, cls_attention), and fused CUDA kernels on a GPU
(cuda_kernels). `minadapt.ops.fast()` bundles them for the encoder; tests/test_fast_ops.py holds
each one against its reference in float64, forward and backward, on padded inputs.
"""
