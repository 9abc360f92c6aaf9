"""Migration 4: which surface accepted a job (``v1`` or ``wavespeed``), and the signing style of
each callback message, as columns instead of being read back from the job's first event."""

VERSION = 4
DESCRIPTION = "job surface, callback message style"
SQL = """
ALTER TABLE jobs ADD COLUMN surface TEXT NOT NULL DEFAULT 'v1';
UPDATE jobs SET surface = 'wavespeed' WHERE id IN (
    SELECT job_id FROM job_events
    WHERE seq = 1 AND detail IS NOT NULL AND json_extract(detail, '$.surface') = 'wavespeed'
);
ALTER TABLE webhook_messages ADD COLUMN style TEXT NOT NULL DEFAULT 'standard';
UPDATE webhook_messages SET style = 'wavespeed'
    WHERE endpoint_id IS NULL AND job_id IN (SELECT id FROM jobs WHERE surface = 'wavespeed');
"""
