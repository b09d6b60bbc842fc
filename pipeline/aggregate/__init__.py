"""One pairs partition: 10-minute event-time windows per subnet pair and the grid intervals to score."""
