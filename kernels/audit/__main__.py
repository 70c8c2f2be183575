"""``python -m kernels.audit``: see kernels.audit."""
from kernels.audit import main

raise SystemExit(main())
