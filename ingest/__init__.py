"""MQTT → Kafka ingest: the gateway, declarations intake and the device fleet simulator."""
