"""Several worker processes (``workers.count`` > 1).

``supervisor`` starts and watches the workers and serves their summed
metrics; ``balancing`` hands each TCP and TLS connection to the worker with
the fewest. Neither imports the per-message path.
"""
