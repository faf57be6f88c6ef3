"""How measures are shown: tables, figures, the HTML / Markdown report, sweep and controlled-study reports."""
