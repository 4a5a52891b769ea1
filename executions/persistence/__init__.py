"""The kernel's ports on Django: the event log and its projections, checkpoints, the inbox,
artifacts, units of work, asynchronous group commit, and the SQL that stores them per database."""
