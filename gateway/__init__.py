"""The chatgw gateway: holds client WebSockets and relays run events from Redis."""
