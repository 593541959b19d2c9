"""Real servers for tests, the demo and the distributed stack, run as native processes on free
loopback ports and always stopped: PostgreSQL from the `pgserver` wheel's bundled binaries
(`postgres.py`). Dev-side code: nothing in the plugin's runtime imports it."""
