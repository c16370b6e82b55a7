"""The simulated world in which kizashi's detectors are exercised: a task with its data splits, a
black-box inference API with accounts and query budgets, benign traffic, real
adversarial-robustness-toolbox attacks (evasion, extraction, poisoning), fake SIEM receivers, and the
demo day that puts them together.

One module per concept: :mod:`.digits` (task and splits), :mod:`.api` (inference API, accounts,
budgets), :mod:`.traffic` (benign traffic and replay), :mod:`.evasion`, :mod:`.extraction`,
:mod:`.poisoning`, :mod:`.demo_day`, :mod:`.receivers` (fake SIEM endpoints), :mod:`.art_setup`. This room imports neither
``kizashi.detectors`` nor ``kizashi.connectors``: whoever needs both (``cli/``, benches, tests) passes
detectors in. Everything is generated from data bundled with scikit-learn (nothing is downloaded) and
is deterministic for a seed.
"""
