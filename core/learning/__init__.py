"""Learning from reviewer labels: stored features, heads, fusion, adapt, OOD guard, neighbours."""
