"""The gRPC layer: everything that speaks protobuf, and nothing else does.

* the coordinator's side: :mod:`~primia.rpc.coordinator_server` (the process),
  :mod:`~primia.rpc.coordinator_service` (the servicer), :mod:`~primia.rpc.coordinator_session`
  (one node's stream);
* the data-owner node's side: :mod:`~primia.rpc.node_client` (dials out, serves tasks) and its
  configuration :mod:`~primia.rpc.node_config`;
* translation between protobuf and the transport-free objects of :mod:`primia.federated`:
  :mod:`~primia.rpc.codec`, :mod:`~primia.rpc.secure_codec`, :mod:`~primia.rpc.evaluation_codec`;
* the wire: :mod:`~primia.rpc.tls` (channels and servers with mutual TLS),
  :mod:`~primia.rpc.chunk_wire` and :mod:`~primia.rpc.methods` (chunk messages with one copy),
  :mod:`~primia.rpc.probe` (a transport check), :mod:`~primia.rpc.status` (``primia status``),
  and the stubs generated from ``protos/`` in :mod:`primia.rpc.generated`.

Servicers and clients only translate; the protocol's logic lives in :mod:`primia.federated`
and :mod:`primia.crypto`, which never import grpc or protobuf (a contract in
``.importlinter`` checks it).
"""
