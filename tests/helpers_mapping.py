"""A field mapping for a third-party detector's alarms (vendor_guard), shared by the adapter,
hostile-input and fuzz tests."""

MAPPING = """
detector: {id: vendor.guard, name: vendor_guard, version: "2.1"}
defaults: {stage: symptom, attack: evasion, atlas.technique: [AML.T0015], severity: high}
fields:
  id: request_id
  time: ts
  account.id: user.name
  source.ip: client_ip
  model.id: model
  score: adv_score
  threshold: cutoff
time_format: epoch_ms
keep_unmapped_as_evidence: true
"""
