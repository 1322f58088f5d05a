"""The sans-IO protocol core: bytes in, events out; no sockets, no Trio, no clocks."""
