"""The library's data as plain values: ids, the field catalogue, people, validation."""
