"""The SIEM query languages ``kizashi rules export`` converts rules to (pySigma backends, see :mod:`.export`).

A module of its own so the CLI can list them without importing pySigma's backends at start-up.
"""

TARGETS = ("splunk", "esql", "eql", "lucene", "sqlite")
