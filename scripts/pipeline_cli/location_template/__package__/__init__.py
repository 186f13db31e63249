"""{{ names.location }}: describe what this location does."""
