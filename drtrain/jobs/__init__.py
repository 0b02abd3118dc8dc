"""Jobs: the JobSpec, the lifecycle (state machine, fenced worker writes), queries, service."""
