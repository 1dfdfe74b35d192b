"""Results and reports: the Parquet run store, tables, diffs between runs, plots. Uses ``core`` only."""
