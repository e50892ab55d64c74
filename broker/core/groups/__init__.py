"""Consumer groups: pure pieces of the group coordinator (assignors)."""
