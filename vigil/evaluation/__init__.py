"""Accuracy evaluation on PhysioNet records (`make eval`); every `eval_*.py` module is one section."""
