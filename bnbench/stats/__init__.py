"""Statistics over a sweep's runs: per-group summaries over seeds (:mod:`bnbench.stats.summary`), paired
comparisons with their verdicts (:mod:`bnbench.stats.comparisons`), Student's t in closed form
(:mod:`bnbench.stats.student_t`), and the group-sequential design behind ``--seeds auto``
(:mod:`bnbench.stats.group_sequential`). Pure functions of ``runs.csv`` DataFrames."""
