"""Clinical rules: base.py (the Rule protocol), criteria.py and exclusions.py (shared
predicates, defined once), one module per rule, registry.py (the list the service runs) and
settings.json (every threshold's default)."""
