"""Runtime control of a running producer: the `ctl` client, its server, what commands do."""
