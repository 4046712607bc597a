"""The Alleycat rider agent and the pure core it shares with the simulator.

The pure core (``core``: the message, the rider model, the standings) does no I/O and reads no
clock: time and randomness are arguments. This package never imports ``simulator`` or boto3; it
runs on a bike's small computer.
"""
