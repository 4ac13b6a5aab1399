from mammo_tui.cli import main

raise SystemExit(main())
