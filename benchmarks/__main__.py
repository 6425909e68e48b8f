"""``python -m benchmarks {list,run,index}``: see :mod:`benchmarks.lib`."""
from benchmarks.lib import main

raise SystemExit(main())
