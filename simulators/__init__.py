"""Stand-ins for the external systems the writeback service talks to, for tests and demos."""
