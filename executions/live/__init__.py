"""Live events: channel groups and their messages, the publisher, the relay, and the interfaces
that follow executions live (the SSE stream, the execution socket, the tenant feed)."""
