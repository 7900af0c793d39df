"""Normalization as pure functions over explicit state: Batch Normalization (:mod:`bnbench.norm.bn`),
its per-example alternatives GroupNorm and LayerNorm (:mod:`bnbench.norm.per_example`) and the classic
worked example computed by the library's own BN (:mod:`bnbench.norm.worked_example`).

The lowest layer above :mod:`bnbench.errors` and :mod:`bnbench.options`: it imports no other part of
bnbench (docs/contributing.md, "Layers")."""
