"""Transport: mutual TLS, the consortium's certificate authority, chunked blob streams,
generated gRPC stubs.
"""
