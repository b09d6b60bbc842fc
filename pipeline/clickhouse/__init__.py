"""ClickHouse: the client (chdb:// or http://), migrations, the sink's writer, the SQL endpoint."""
