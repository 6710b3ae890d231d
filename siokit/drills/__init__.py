"""Fault drills against the local cluster (`make drills`): see siokit/drills/runner.py."""
