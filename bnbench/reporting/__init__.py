"""What a results folder says: its report (summary, comparisons, verdicts, notes:
:mod:`bnbench.reporting.model`) and its text cells, the same in the terminal and on the page
(:mod:`bnbench.reporting.cells`), its figures (:mod:`bnbench.reporting.figures`, drawn with
:mod:`bnbench.reporting.figure_layout`) and the page, one self-contained HTML file to send a colleague
(:mod:`bnbench.reporting.page`)."""
