"""What the gateway and the worker both use: settings, the wire protocol, Redis keys, errors."""
