"""The ``bnbench`` command line (Typer): each command parses its arguments, calls one library
function and renders the result with rich (:mod:`bnbench.cli.terminal`); nothing below this layer
prints. :mod:`bnbench.cli.app` is the app and the console script; the commands are in
:mod:`bnbench.cli.sweep` (with :mod:`bnbench.cli.progress`), :mod:`bnbench.cli.report` and
:mod:`bnbench.cli.commands`. :mod:`bnbench.cli.doc_pages` writes the generated reference pages
(``docs/fields.md``, ``docs/columns.md``)."""
