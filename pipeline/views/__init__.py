"""What a person looks at: the static plot of windows."""
