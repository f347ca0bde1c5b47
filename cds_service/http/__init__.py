"""The HTTP surface: Flask views (discovery, hooks, feedback), JWT authentication of CDS
clients, and errors as OperationOutcome. Depends on hooks/; nothing below depends on it."""
