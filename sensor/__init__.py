"""The sensor: kizashi in front of a model server that speaks the Open Inference Protocol (KServe
v2 REST: KServe, Triton, Seldon MLServer), or behind it as a receiver for KServe's inference logger.

Rooms: the sensor imports the engine (events, store, pipeline) and nothing from detectors,
connectors or scenarios; ``kizashi.cli.sensor_cmd`` builds the detectors from their fitted artefacts
and hands them over as :class:`~kizashi.sensor.core.OnlineDetector` objects. See docs/sensor.md.
"""
