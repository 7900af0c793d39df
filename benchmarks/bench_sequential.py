"""The error rate and power of ``sweep --seeds auto``'s design (bnbench.stats.group_sequential), simulated.

Prints, over 1500 simulated experiments each (tests/test_sequential.py's model: paired binomial
accuracies on a 1000-example test split, a seed effect shared by both arms): the rate of false
directions with no difference, under the design and under the same looks each at a fixed 95%; and the
power and median stopping seed count for a difference of 1.4 paired standard deviations.
"""

import numpy as np

from bnbench.stats import group_sequential
from tests.test_sequential import simulated_runs, stopped_decisions


def main() -> None:
    design = group_sequential.design(3, 20)
    naive = group_sequential.Design(design.looks, (0.05,) * len(design.looks))
    null = simulated_runs(0.0, 20, np.random.default_rng(0))
    for name, plan in (("alpha spending", design), ("95% at every look", naive)):
        rate = stopped_decisions(null, plan)["decision"].isin(["higher", "lower"]).mean()
        print(f"no difference, looks {design.looks}: {name}: false directions {100 * rate:.1f}%")
    real = stopped_decisions(simulated_runs(0.03, 20, np.random.default_rng(1)), design)
    print(f"difference 0.03 (1.4 paired sd): right direction {100 * (real['decision'] == 'higher').mean():.1f}%, "
          f"wrong {100 * (real['decision'] == 'lower').mean():.1f}%, median stop at {real['stopped'].median():.0f} seeds")


if __name__ == "__main__":
    main()
