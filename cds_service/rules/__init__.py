"""Clinical rules: base.py (the Rule protocol), the shared predicates defined once by
clinical domain (criteria.py: chronic low back pain, opioid exposure; alternatives.py: first-
and second-line therapy and the barriers to suggesting one; dose.py: MME/day, totals and a
draft's decision signature; lines.py: drug labels and shared card lines; exclusions.py), one
module per rule, registry.py (the list the service runs) and settings.json (every threshold's
default)."""
