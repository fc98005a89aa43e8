"""The end-to-end demos: a federation of synthetic hospitals and encrypted inference.

:mod:`primia.demo.federation` is ``primia demo`` (``make demo``); :mod:`primia.demo.inference`
is ``primia infer demo``. Both start real servers as subprocesses on loopback with mutual
TLS, so they sit above every package they drive, the gRPC layer included.
"""
