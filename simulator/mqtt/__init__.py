"""The fleet over MQTT, the path real bikes use: a connection per virtual rider, each
publishing its ride message once a second to a broker (IoT Core, or ``alleycat stack``).

Nothing is here yet; ``simulate`` writes to Kinesis through :mod:`simulator.sinks` only.
"""
