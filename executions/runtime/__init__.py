"""What a worker process does: claim executions (leases), run them through the kernel, renew and
release leases, reap the work of workers that died. It may call services, never the reverse."""
