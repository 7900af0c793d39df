"""Native kernels bnbench's programs call through XLA's FFI: oneDNN's convolutions
(:mod:`bnbench.kernels.onednn`), optional (``pip install 'bnbench[onednn]'``)."""
