"""The application database: engine, sessions, migrations, rows, and the repositories that take it."""
