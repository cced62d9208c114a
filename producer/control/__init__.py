"""Runtime control of a running producer: the `ctl` client and the endpoint it talks to
(what each command does is producer.controller's)."""
