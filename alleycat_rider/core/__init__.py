"""The pure core the rider agent and the simulator share: the ride message (``message``), the
rider model (``physiology``) and the results message the backend publishes back (``standings``).

No I/O and no clock: time and randomness are arguments, so both sides behave the same.
"""
