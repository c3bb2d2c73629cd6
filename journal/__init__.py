"""The Arrow frame journal: writer, reader, torn-tail recovery, schema."""
