"""edition → delivery: one ledger row per reader, sent in batches over one connection each, every outcome recorded."""
