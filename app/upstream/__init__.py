"""Adapters that replace or copy internals of python-engineio, python-socketio and uWSGI.

One module each, like python-engineio's ``async_drivers/``; each docstring names the upstream
version it was written against and why it exists.
"""
