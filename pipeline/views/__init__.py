"""What a person looks at: the static plot of what landed in ClickHouse."""
