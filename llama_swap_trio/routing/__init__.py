"""Scheduling: which model runs, which request waits, which model is evicted."""
