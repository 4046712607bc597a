"""The Alleycat fleet simulator: virtual riders driving Kinesis."""
