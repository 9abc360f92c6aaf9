"""Migration 6: the index of jobs by status becomes a plain one.

Migration 1 made it partial (``WHERE status IN ('queued', 'submitted', 'processing')``).
SQLite evaluates such a condition by building a temporary table of the list on every insert
and on every update of a job's row: a fifth of what writing a new job's row cost. And a query
uses a partial index only when its own condition repeats the index's list word for word, so
the queries for jobs at WaveSpeed (the reconciler's polls, the poll backlog) and the
dispatcher's query by bound parameters scanned every job ever accepted. The plain index
serves them all.
"""

VERSION = 6
DESCRIPTION = "plain index of jobs by status"
SQL = """
DROP INDEX jobs_active;
CREATE INDEX jobs_status ON jobs(status, id);
"""
