"""smartport: the ground floor every package may import and that imports none of them:
settings, the error family, logging, signals, and the Kafka and MQTT client factories."""

__version__ = "0.1.0"
