"""A sweep's results on disk: the CSV schema (:mod:`bnbench.results.schema`), files that keep whole rows
(:mod:`bnbench.results.csv_files`), the output folder with its lock and resume
(:mod:`bnbench.results.folder`), merging shards' folders (:mod:`bnbench.results.merging`), typed
DataFrames (:mod:`bnbench.results.frames`), each metric's range and direction
(:mod:`bnbench.results.metrics`) and what a result needs to be reproduced besides its spec
(:mod:`bnbench.results.provenance`)."""
