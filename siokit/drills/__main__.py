import sys

from siokit.drills.runner import main

sys.exit(main())
