"""The cache contract and the prefix machinery: specs, layouts, cache containers, conventions, the
prefix encoder and ``PrefixModel``. Imports nothing from the layers above (matrix, reporting, probe, CLI)."""
