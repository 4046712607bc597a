"""Enrolling a bike: development certificates (``devcerts``), the local mutual-TLS mosquitto
(``broker``), AWS IoT Core provisioning (``provision``), and their commands (``alleycat certs``,
``alleycat broker``, ``alleycat provision``).

None of it runs during a ride: the agent only reads the files these write.
"""
