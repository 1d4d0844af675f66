// Placeholder (issue #12): the SQLite engine of the database backend.
