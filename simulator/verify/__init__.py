"""``alleycat verify``: reading a stream back (``cli``) and checking that it holds every ride
message once, no second missing, nothing malformed, nothing off its shard (``check``).
"""
