"""Upstream process supervision."""
