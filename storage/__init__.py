"""Persistence: SQLModel tables, engine, repositories, Alembic migrations."""
