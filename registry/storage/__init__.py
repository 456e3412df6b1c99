"""Where the log, its documents, tokens and derived certificate tables are kept."""
