"""Events: sources and write keys, the event contract, ingestion, the raw event store
(which is also the outbox of the processing pipeline), dedupe and rejected events."""
