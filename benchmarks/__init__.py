"""Benchmarks for llama-swap-trio: see benchmarks/README.md. Not part of the installed package."""
