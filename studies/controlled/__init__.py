"""``probclr controlled``: does the derived likelihood recover uncertainty where the data really has it? A
positive control with known posteriors (process.py), the methods (methods.py), the measures (measures.py),
the runs (study.py) and their table and figure (summary.py)."""
