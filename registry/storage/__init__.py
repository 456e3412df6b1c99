"""Where the log, its documents, tokens and trust snapshots are kept."""
