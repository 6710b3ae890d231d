"""The kit's lab tooling: what tests, benchmarks and measurement scripts run on this machine.

Nothing here is imported by the app or by what the roles deploy; lab code imports from here, never
from tests/.
"""
