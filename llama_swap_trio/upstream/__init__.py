"""Upstream process supervision.

- :mod:`.api`: states, notices, StartFailed, UpstreamLike (the shared interface);
- :mod:`.upstream`: ``Upstream``, one model's process supervisor;
- :mod:`.guard`: ``open_process_guard`` / ``ProcessGuard`` (watchdog + state file);
- :mod:`.statefile`: ``state_file_path``; :mod:`.process`, :mod:`.probe`, :mod:`.ttl`,
  :mod:`.procfs`, :mod:`.watchdog`, :mod:`.watchdog_child`: the pieces.

This file deliberately imports nothing: the watchdog process imports
``llama_swap_trio.upstream.watchdog_child`` and must start fast, with the standard library only.
"""
