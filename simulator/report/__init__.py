"""What a run shows and reports: the counters and latency histograms (``stats``), the live
terminal dashboard (``dashboard``, drawn by ``live``) and the end-of-run summary (``summary``).
"""
