import sys

from benchmarks.des.run import main

sys.exit(main())
