"""Ray actors: thin shells around `fabric/` that own state and move bytes."""
