"""The Kafka/Faust shell: the app, the agents, changelog restore, topics, Kafka clients, the sink's consumer,
the host agent's sender, the monitors' follower, health, child processes, the embedded broker, metrics, the
garbage collector's tuning."""
