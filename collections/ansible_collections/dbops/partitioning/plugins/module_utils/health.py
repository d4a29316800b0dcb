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
