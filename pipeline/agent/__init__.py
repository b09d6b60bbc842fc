"""The host agent (``flowmon agent``): the kernel's TCP counters -> per-interval wire reports, no Kafka here.

``sockdiag`` reads the counters (netlink sock_diag dumps and destroy notifications), ``ledger``
turns them into per-connection deltas (each byte counted once), ``scope`` says which connections
count, ``report`` cuts an interval into wire reports (top-K remotes), ``spool`` keeps what the
broker has not acknowledged (and the saved counters) on disk, ``host`` runs one interval, ``config``
is the agent's own configuration. The Kafka side (the interval clock and the sender) is
``runtime.agent``; the command is ``cli.agent``.
"""
