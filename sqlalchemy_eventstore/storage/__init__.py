"""PostgreSQL storage: schema objects and the SQL behind each store operation.

Internal: nothing here is part of the public API.
"""
