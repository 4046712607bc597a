"""The fleet on Locust's distributed runners, for loads one process cannot make.

Nothing is here yet; a run is one process.
"""
