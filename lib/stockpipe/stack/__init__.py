"""The local stack: setup of the pinned tools and the services' process manager."""
