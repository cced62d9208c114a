"""The bridge: the stream, with nothing lost or doubled, into NATS JetStream or MQTT."""
