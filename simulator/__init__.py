"""The Alleycat fleet simulator: virtual riders driving Kinesis."""


def build() -> str:
    """``compiled`` when the hot path was built with mypyc (see setup.py), else ``pure Python``."""
    from simulator.engine import fleet

    return "compiled" if fleet.__file__.endswith((".so", ".pyd")) else "pure Python"
