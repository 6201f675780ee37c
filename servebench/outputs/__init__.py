"""One run for people: the console report, the timeline plot, derived files remade from raw records."""
