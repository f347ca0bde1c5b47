"""Governance analytics: the per-rule report (`cds-service report`), its tables and charts,
and the /analytics page (cds_service.http.analytics)."""
