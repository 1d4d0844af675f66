// Placeholder (issue #12): the PostgreSQL engine of the database backend.
