"""mosquitto with mutual TLS, started per test session on a free port."""
