"""`python -m cds_service.cli`."""

from cds_service.cli import main

raise SystemExit(main())
