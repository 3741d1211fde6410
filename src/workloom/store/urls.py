"""The database a server and the CLI use when none is named; kept apart from ``database`` so that naming it
does not load SQLAlchemy (every CLI command shows it as an option's default)."""

DEFAULT_URL = "sqlite:///./workloom.db"
