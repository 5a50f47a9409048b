"""The report store's SQL: one template per statement, for both drivers.

Postgres and SQLite speak the same SQL here apart from placeholders, so each
statement is written once with ``{p1}``..``{p9}`` and :func:`sql` fills in the
driver's (``$1`` or ``:p1``). Kept apart from :mod:`.storage`, which runs them.
"""

from __future__ import annotations

UPSERT_REPORT = """
INSERT INTO steadfast_reports
    (workflow_id, report_id, run_id, agent, namespace, topic, markdown, cost_usd,
     created_at, updated_at)
VALUES ({p1}, {p2}, {p3}, {p4}, {p5}, {p6}, {p7}, {p8}, {p9}, {p9})
ON CONFLICT (workflow_id, run_id) DO UPDATE SET updated_at = excluded.updated_at
RETURNING report_id, created_at = updated_at
"""

# A row marked 'failed' means the SMTP server refused the mail outright, so it
# was certainly not delivered and may be claimed again.
CLAIM_EMAIL = """
INSERT INTO steadfast_emails (workflow_id, run_id, status, recipients, claimed_at)
VALUES ({p1}, {p2}, 'claimed', {p3}, {p4})
ON CONFLICT (workflow_id, run_id) DO UPDATE SET
    status = 'claimed', recipients = excluded.recipients, claimed_at = excluded.claimed_at
WHERE steadfast_emails.status = 'failed'
RETURNING workflow_id
"""

MARK_EMAIL = (
    "UPDATE steadfast_emails SET status = {p3}, sent_at = {p4}, detail = {p5} "
    "WHERE workflow_id = {p1} AND run_id = {p2}"
)
EMAIL_STATUS = "SELECT status FROM steadfast_emails WHERE workflow_id = {p1} AND run_id = {p2}"
COUNT_REPORTS = "SELECT count(*) FROM steadfast_reports WHERE workflow_id = {p1}"
#: What Temporal appends to a Schedule's workflow id for each run it starts (the
#: scheduled time, ``-2026-12-01T02:41:34Z``), as a LIKE pattern: ``_`` is one character.
SCHEDULED_RUN_SUFFIX = "-____-__-__T__:__:__Z"
# Oldest first; the report id breaks ties between rows saved in the same microsecond.
# {p2}: the ids of the runs its Schedule started (scheduled_runs_pattern).
LIST_REPORTS = (
    "SELECT workflow_id, run_id, report_id, agent, namespace, topic, markdown, cost_usd, "
    "created_at, updated_at FROM steadfast_reports "
    "WHERE workflow_id = {p1} OR workflow_id LIKE {p2} ESCAPE '\\' "
    "ORDER BY created_at, report_id"
)


GET_REPORT = (
    "SELECT workflow_id, run_id, report_id, agent, namespace, topic, markdown, cost_usd, "
    "created_at, updated_at FROM steadfast_reports WHERE report_id = {p1}"
)


def scheduled_runs_pattern(workflow_id: str) -> str:
    """The LIKE pattern of the ids of the runs a Schedule of ``workflow_id`` started."""
    escaped = workflow_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + SCHEDULED_RUN_SUFFIX


# The first write of a part wins: an attempt that finished a call and was lost before
# reporting it leaves the reply, and the next attempt uses it instead of asking again.
PUT_PART = (
    "INSERT INTO steadfast_transcripts (conversation, turn, part, body, created_at) "
    "VALUES ({p1}, {p2}, {p3}, {p4}, {p5}) ON CONFLICT (conversation, turn, part) DO NOTHING"
)
GET_PART = (
    "SELECT body FROM steadfast_transcripts "
    "WHERE conversation = {p1} AND turn = {p2} AND part = {p3}"
)
GET_PARTS = (
    "SELECT turn, part, body FROM steadfast_transcripts "
    "WHERE conversation = {p1} AND turn <= {p2} ORDER BY turn, part"
)
# With the report's save, in its transaction: the loop that needed the transcript is over.
# Alone, from the retention sweep, for a run that ended without a report.
FORGET_TRANSCRIPT = "DELETE FROM steadfast_transcripts WHERE conversation = {p1}"
# Conversations nothing was written to since {p1}, after {p2} in key order: a page of
# {p3}, so a sweep reaches every one however many it keeps.
IDLE_CONVERSATIONS = (
    "SELECT conversation FROM steadfast_transcripts WHERE conversation > {p2} "
    "GROUP BY conversation HAVING max(created_at) < {p1} ORDER BY conversation LIMIT {p3}"
)


#: Placeholders ``{p1}``..``{p9}`` of the templates above, per driver (built once).
MARKS: dict[str, dict[str, str]] = {
    style: {f"p{i}": (f"${i}" if style == "pg" else f":p{i}") for i in range(1, 10)}
    for style in ("pg", "sqlite")
}


def sql(template: str, style: str) -> str:
    return template.format(**MARKS[style])
