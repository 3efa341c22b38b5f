"""The gRPC side of the shared runtime: the only place (with servicers) that imports grpc."""
