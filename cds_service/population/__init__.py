"""Population backtest: replay every historical opioid or benzodiazepine order of a FHIR Bulk
Data export (or a folder of patient Bundles) as the order-sign call the EHR would have made
that day, through the service's own engine, locally (DuckDB + a process pool) or on Spark.

Nothing outside this package imports it.
"""
