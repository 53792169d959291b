"""Serving relate-anything to people and programs: the web UI (`ui`) and the REST API.

Each module imports its web framework itself, so importing this package costs nothing.
"""
