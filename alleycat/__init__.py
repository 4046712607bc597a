"""The ``alleycat`` command: the rider agent and the fleet simulator behind one entry point."""
