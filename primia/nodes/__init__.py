"""The gRPC side of a federation: the coordinator's service and the data-owner node's client.

Servicers and clients here only translate between protobuf messages and the
transport-free objects of :mod:`primia.federated`; the protocol's logic lives there.
"""
