from provisiond.cli import main

raise SystemExit(main())
