"""`acr runs`: find run folders and compare them, from their records only (meta.json,
config.yaml, summary.json; no torch): listing.py (rows, filters), compare.py (config diff,
shared metrics), show.py (the tables)."""
from acr.commands.runs.compare import compare_runs, comparison_as_json
from acr.commands.runs.listing import list_runs, rows_as_json
from acr.commands.runs.show import show_comparison, show_runs

__all__ = ["compare_runs", "comparison_as_json", "list_runs", "rows_as_json",
           "show_comparison", "show_runs"]
