"""From measured runs to a decision: prices and cost (prices.py, cost.py), reading run/compare/
sweep directories into one table (load.py), SLOs and goodput (slo.py), the study's tables,
Pareto fronts and capacity (recommend.py), and the HTML report (html.py); the tables'
console/Markdown/CSV renderings are in servebench/outputs (table.py, render.py, summary_tables.py).
Definitions: docs/decide.md."""
