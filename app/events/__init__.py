"""Socket.IO namespaces of the service, one module per namespace."""
