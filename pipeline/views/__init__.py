"""What a person looks at: the named SQL queries (``queries``) behind the console's and Grafana's panels,
the Grafana dashboards generated from them (``grafana``), and the static plot of what landed (``plot``)."""
