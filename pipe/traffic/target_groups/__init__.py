"""The load balancer around each batch: the target groups, draining, registering, waiting for health."""
