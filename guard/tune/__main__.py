from guard.tune.cli import main

raise SystemExit(main())
