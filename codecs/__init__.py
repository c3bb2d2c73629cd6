"""Exchange codecs: one module per exchange, each turning journaled frames into typed events."""
