"""kizashi's command line: the one place that wires detectors, engine and connectors together."""
