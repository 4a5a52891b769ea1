"""Tenant use cases, one module per family: submit, controls, children, blueprints. Interfaces
call these; they never write models themselves. The tenant is always an explicit argument."""
