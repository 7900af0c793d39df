"""What a results folder says: its report (summary, comparisons, verdicts, notes:
:mod:`bnbench.reporting.model`) and its text cells, the same in the terminal and on the page
(:mod:`bnbench.reporting.cells`), its figures (:mod:`bnbench.reporting.figures`, and the paired
differences its verdicts rest on, :mod:`bnbench.reporting.paired`, drawn with
:mod:`bnbench.reporting.figure_layout`) and the page, one self-contained HTML file to send a colleague
(:mod:`bnbench.reporting.page`); and which of a spec's verdicts rest on float rounding
(:mod:`bnbench.reporting.robustness`)."""
