"""Sans-IO TCP engine."""
