"""The Kafka/Faust shell: the app, the agents, changelog restore, topics, brokers, metrics."""
