"""Local stand-ins for the AWS side of Alleycat, so the whole loop runs on one machine.

The IoT rule (MQTT in, one Kinesis record per message out, an error action for what the stream
refuses), the standings backend (the stream in, each rider's best output per race out on the
results topic), and ``alleycat stack``, which starts a broker, a Kinesis-compatible server and
both of them.
"""
