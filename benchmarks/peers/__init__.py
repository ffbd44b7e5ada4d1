"""The peer comparison (`scripts/bench.py --peers`): this server against MLServer, LitServe and BentoML."""
