"""kizashi at scale: the detection pipeline on a distributed stream engine (Apache Flink).

The room imports the engine only (rules, events); fitted query-stream detectors reach it as objects
from the cli wiring, never by importing ``kizashi.detectors``. ``keyed_rules`` and
``keyed_detectors`` are plain Python (no PyFlink) and hold the per-event and per-key steps;
``flink`` builds the PyFlink job from them and runs in its own virtual environment
(``.venv-flink``, see docs/scale.md); ``launch`` starts that job from the main environment.
"""
