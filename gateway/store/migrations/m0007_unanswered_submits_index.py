"""Migration 7: an index of the submits WaveSpeed has not answered, for the reconciler.

Every second the reconciler asks for queued jobs whose submit was attempted before the
deadline and never answered (``SQLiteStore.expired_submits``). No index served that: SQLite
took the unique index on ``upstream_id`` for ``upstream_id IS NULL`` (it expects one row from
an equality on a unique index) and so read every job WaveSpeed never took, the whole backlog
and every job ever refused or cancelled before its submit: 50 ms per tick at 200,000 such jobs,
growing with them. This index holds only the submits in flight or of unknown outcome (at most
the dispatcher's concurrency, plus those a crash left), so the query reads what it returns.
It is partial with equalities and IS [NOT] NULL only (not an IN list: see migration 6), and
the query names it (``INDEXED BY``), since the planner would still prefer the unique index.
"""

VERSION = 7
DESCRIPTION = "index of unanswered submits"
SQL = """
CREATE INDEX jobs_unanswered_submits ON jobs(submit_attempted_at)
    WHERE status = 'queued' AND upstream_id IS NULL AND submit_attempted_at IS NOT NULL;
"""
