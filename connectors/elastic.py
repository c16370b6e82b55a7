"""``kizashi.connectors.elastic``: public import path of the ECS formatter and Elasticsearch ``_bulk``
sink (implemented in :mod:`kizashi.connectors.http_sinks`, which holds every HTTP sink)."""

from kizashi.connectors.http_sinks import EcsFormatter, ElasticBulkSink, ecs_document

__all__ = ["EcsFormatter", "ElasticBulkSink", "ecs_document"]
