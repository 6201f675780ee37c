"""Measured results for people: one run's console report and timeline plot, derived files remade
from raw records, and the tables of report/recommend/cost (table.py) in console, Markdown and
CSV (render.py)."""
