"""Members: the golden-record profile, computed aggregates, loyalty, tags and segments."""
