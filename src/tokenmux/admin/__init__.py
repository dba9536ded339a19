"""The operators' console: the admin API and the dashboard it serves."""
