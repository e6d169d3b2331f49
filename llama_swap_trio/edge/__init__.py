"""The edge: the transport. The only code that knows sockets (ARCHITECTURE.md, rule 9)."""
