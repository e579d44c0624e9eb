"""What happened live: acceptance and resolution per experiment arm and offer, from Redis."""
