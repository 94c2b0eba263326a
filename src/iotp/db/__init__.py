"""Database: engine, ORM tables, migrations."""
