"""The fleet over MQTT, the path real bikes use: a connection per virtual rider, each
publishing its ride message once a second to a broker (IoT Core, or ``alleycat stack``).

``fleet`` runs the riders over their connections and counts everything; ``options`` and ``cli``
are ``alleycat simulate --via mqtt``.
"""
