"""The review workflow: the store (one owner per table) and the actions every front door calls."""
