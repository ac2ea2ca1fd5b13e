"""The only place SQL lives: the library's SQLite file, its migrations, and attachment files."""
