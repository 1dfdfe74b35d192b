"""The compatibility matrix: cells (spec row x adapter x check), the oracle, the six checks, the
adapters under test, and the pytest plugin that runs them and settles each verdict. Uses ``core`` and
writes rows through ``reporting``."""
