"""What a researcher asks for, before anything is trained: the run fields and their registry
(:mod:`bnbench.experiment.fields`), the values each takes (:mod:`bnbench.experiment.rules`), specs and
their grids (:mod:`bnbench.experiment.spec`), whether one spec holds another's runs
(:mod:`bnbench.experiment.extension`), one resolved run (:mod:`bnbench.experiment.runs`) and a
spec's question, the comparisons it states (:mod:`bnbench.experiment.question`).

Imports no JAX, pandas, matplotlib or optax, so that ``bnbench --help`` and ``bnbench sweep --dry-run``
start fast (``tests/test_startup.py`` checks it): the checks that need them (plugin networks, optax
optimizers) are the planner's (:mod:`bnbench.sweeping.plan`)."""
