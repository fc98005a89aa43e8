"""Federated training: the coordinator's rounds and the data owner's side of them.

Everything here is free of transport: the gRPC layer (:mod:`primia.rpc`) turns messages
into the tasks and outcomes of :mod:`primia.federated.tasks` and back.
"""
