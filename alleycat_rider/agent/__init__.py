"""The agent on the bike: the ride loop and what serves it.

``loop`` rides (sensor, message, spool, MQTT, once a second): ``inbox`` holds what wakes it,
``linkstate`` says what each event of the link means, ``raceclock`` which race and second each
tick rides in (``racestate`` keeps the race across restarts); ``publisher`` sends what the loop
prepares and retries what the broker did not acknowledge; ``schedule`` keeps the whole-second
deadlines; ``display`` the panel; ``spool`` the QoS 1 messages on disk (``spoolmemory`` holds
what the disk refuses, ``spoolfile`` opens it, ``salvage`` and ``wal`` recover a damaged one);
``enrol`` the first boot's fleet provisioning by claim.

Importing this package imports none of them: ``config`` reads the spool's defaults without
loading the loop.
"""
