"""The OpenAI wire contract the gateway speaks to its clients: request validation and shapes."""
