"""Timing BN kernels against peer implementations and the device's memory bandwidth
(``bnbench profile``): the measurements (:mod:`bnbench.profiling.kernels`), the cases and rows they make
(:mod:`bnbench.profiling.table`) and the peers (:mod:`bnbench.profiling.peers`)."""
