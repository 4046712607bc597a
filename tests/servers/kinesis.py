"""kinesalite (a Kinesis-compatible server) started on 127.0.0.1 with a free port."""
