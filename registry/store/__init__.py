"""The store: the only code that opens database connections. URLs and engines, the models and migrations' gate,
report and measurement ingest, stored reports, exports and snapshots, and the views' SQL."""
