"""Load on a server: locust robots (steady.py, ramp.py, upgrade.py, run by `locust -f`), the dashboard
drawn from Prometheus, and the serving benchmarks (`scripts/bench_serve.py`, `scripts/bench_swap.py`):
a no-model floor app, a raw-socket load generator, the in-process cost of the ASGI app, a py-spy profile
summary and the report writers."""
