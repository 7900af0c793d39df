"""One run's training, as compiled JAX: what a program is specialised to and what it traces
(:mod:`bnbench.training.signature`), the program itself (:mod:`bnbench.training.program`), optimizers
and the recipe around the model (:mod:`bnbench.training.optimizers`, :mod:`bnbench.training.recipe`),
the mechanism probes (:mod:`bnbench.training.probes`), what a run returns
(:mod:`bnbench.training.outcomes`), the execution context its numbers depend on
(:mod:`bnbench.training.context`), with the host's part of it (:mod:`bnbench.training.host`) and the
numerics a process computes with (:mod:`bnbench.training.numerics`), and what a spec's networks resolve to
(:mod:`bnbench.training.inventory`)."""
