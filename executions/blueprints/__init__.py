"""Declarative blueprints: graphs that tenants define as JSON, and the node kinds they are made of."""
