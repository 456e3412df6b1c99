"""Key files: the log's signing key, body and lab keys, and the demo's fixed keys."""
