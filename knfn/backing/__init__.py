"""Backing services (factor 4): Postgres and S3, embedded or external, found by URL from env."""
