"""``python -m enact_client``: the remote command line (``enact-remote``)."""

from enact_client.cli import main

raise SystemExit(main())
