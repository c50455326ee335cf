"""Reliability: kills and resume, faults, bad input, concurrent runs (see run_driver.py)."""
