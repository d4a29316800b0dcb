# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the server says about its replicas: read by the guards of phase 2 (the backfill's
throttle) and phase 3 (the switchover's pre-swap checks), in one place (HARD-PROBLEMS 17)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

# replay_lag is NULL for a replica that has replayed everything and is idle: no lag.
REPLICA_LAG_SQL = ("SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8 AS lag, count(*) AS replicas "
                   "FROM pg_catalog.pg_stat_replication")


def replica_lag_s(session):
    """The largest replay lag over the primary's replicas, in seconds (0 without replicas)."""
    return float(session.query(REPLICA_LAG_SQL)[0]["lag"] or 0)


# Without pg_read_all_stats (part of pg_monitor) replay_lag reads NULL for every replica: a lag
# guard that read that as "no lag" would be silently off (HP21).
LAG_VISIBLE_SQL = """
SELECT count(*) AS replicas,
       (SELECT rolsuper OR pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
          FROM pg_catalog.pg_roles WHERE rolname = current_user) AS sees_all
FROM pg_catalog.pg_stat_replication
"""


def replica_lag_warnings(session):
    """A warning when the primary has replicas whose lag this role cannot read."""
    row = session.query(LAG_VISIBLE_SQL)[0]
    if row["replicas"] and not row["sees_all"]:
        return ["the replica lag cannot be read by this role (grant pg_monitor, or pg_read_all_stats): "
                "the replica-lag guard cannot hold the copy back"]
    return []
