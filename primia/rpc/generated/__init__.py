"""gRPC stubs generated from protos/ by `make proto`."""
