"""Guards around the calls the operator makes: the PAI circuit breaker, the PAI rate limit, the status write gate."""
