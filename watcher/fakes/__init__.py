"""Small, honest in-memory implementations of the daemon's interfaces, shipped with them
(as httpx ships `MockTransport`): fast unit tests of anything that uses a Source, Target,
Runtime, Router or Operator get a real fake for free. Integration tests use real servers.
"""
