"""``alleycat compare``: one workload (``replay``) run through each partition-key strategy or
batching mode in virtual time (``runs``), what each would cost a month (``costs``), and the
table that sets them side by side (``cli``).
"""
