from guard.eval.cli import main

raise SystemExit(main())
