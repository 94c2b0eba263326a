"""The embedded MQTT broker (amqtt) for zero-set-up runs."""
