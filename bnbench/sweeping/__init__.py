"""Running a spec: plan its grid (validate everything, create nothing), hold the output folder's
lock, train every run through the engine and record it, and add seeds until every stated comparison is
decided."""
