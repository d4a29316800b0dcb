# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the server says about its replicas and its sessions, and what it lets this role see:
read by the guards of phase 2 (the backfill's throttle) and phase 3 (the switchover's pre-swap
checks), checked by phase 1's preflight, in one place (HP17, HP21).

A guard that cannot measure is never silently off (HP21). Without the privileges of
``pg_read_all_stats`` (``pg_monitor`` includes it) the server hides from a role the details of
other roles' sessions (``xact_start``, ``state`` and ``query`` read NULL and
``<insufficient privilege>``) and of the replicas (``replay_lag`` and ``state`` read NULL).
Read as "no transaction" and "no lag", the long-transaction check and the replica-lag guard
would pass whatever happens. So each reading counts what it could not see, and a guard that met
something hidden refuses with the GRANT that fixes it (``BlindGuard``), unless the operator
accepted the downgrade (``allow_blind_guards``): then it measures what it can see, and phase 1
and the module's result say so as a warning.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from dataclasses import dataclass

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import display

STATS_ROLE = "pg_read_all_stats"
ALLOW_KNOB = "allow_blind_guards"

# replay_lag is NULL for a replica that has replayed everything and is idle (no lag), and for
# every replica this role may not see; state is NULL exactly in the second case.
REPLICA_LAG_SQL = """
SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8 AS lag, count(*) AS replicas,
       count(*) FILTER (WHERE state IS NULL) AS hidden
  FROM pg_catalog.pg_stat_replication
"""

# The server's own rule (HAS_PGSTAT_PERMISSIONS): a role sees the details of a session when it
# has the privileges of pg_read_all_stats or of the session's role.
SEES_SESSION_SQL = ("(pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') "
                    "OR pg_catalog.pg_has_role(current_user, {usesysid}, 'USAGE'))")

VISIBILITY_SQL = """
SELECT current_user AS role, pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS sees_all,
       (SELECT count(*) FROM pg_catalog.pg_stat_replication) AS replicas
"""


@dataclass
class ReplicaLag:
    lag_s: float        # the largest replay lag this role can see, in seconds (0 without replicas)
    replicas: int
    hidden: int         # replicas whose lag this role may not read


class BlindGuard(PartitioningError):
    """A guard met what this role may not see, and the downgrade was not accepted."""


def grant_advice(role):
    return ("GRANT %s TO %s (pg_monitor includes it), or set %s: true (partitioning_%s) to go on with the guards "
            "reduced to what the role can see" % (STATS_ROLE, display(role), ALLOW_KNOB, ALLOW_KNOB))


def replica_lag(session):
    """The replicas' replay lag as this role can read it (``ReplicaLag``)."""
    row = session.query(REPLICA_LAG_SQL)[0]
    return ReplicaLag(lag_s=float(row["lag"] or 0), replicas=int(row["replicas"]), hidden=int(row["hidden"]))


def replica_lag_s(session, allow_blind=False):
    """The largest replay lag over the primary's replicas, in seconds (0 without replicas).

    Raises ``BlindGuard`` when some replica's lag is hidden from this role, unless
    ``allow_blind``: then the lag of the replicas it can see (the caller has warned)."""
    lag = replica_lag(session)
    if lag.hidden and not allow_blind:
        raise blind_guard(session, "replica-lag guard", "the replay lag of %d of %d replica(s)" % (lag.hidden,
                                                                                                   lag.replicas))
    return lag.lag_s


def blind_guard(session, guard, hidden):
    """The ``BlindGuard`` error of ``guard``, which met ``hidden`` (what it could not measure)."""
    role = session.scalar("SELECT current_user")
    return BlindGuard("The %s cannot measure %s: hidden from the role %s, which lacks the privileges of %s; what it "
                      "cannot see would pass as nothing (HP21). %s." % (guard, hidden, display(role), STATS_ROLE,
                                                                        grant_advice(role)))


@dataclass
class Blindness:
    """What the guards of phases 2 and 3 cannot see with ``role`` (``what``, one sentence)."""
    role: str
    what: str

    def refusal(self):
        """Refused: what is blind, and the GRANT (or the knob) that fixes it."""
        return "%s. %s." % (self.what, grant_advice(self.role))

    def downgrade(self):
        """Accepted by the operator: the warning that says so, every time."""
        return "%s. Accepted with %s: those guards measure only what the role can see." % (self.what, ALLOW_KNOB)


def blind_guards(session):
    """``Blindness`` of this role, or None when it sees every session and replica."""
    row = session.query(VISIBILITY_SQL)[0]
    if row["sees_all"]:
        return None
    replicas = ("; the replay lag of its %d replica(s) reads NULL, so the replica-lag guard (phases 2 and 3) "
                "cannot hold back" % row["replicas"]) if row["replicas"] else (
        "; a replica would hide its replay lag from the replica-lag guard (phases 2 and 3)")
    return Blindness(row["role"], "the role %s lacks the privileges of %s: other roles' sessions show no transaction "
                                  "start, state nor query, so the switchover's check for long transactions and the "
                                  "backfill's count of active sessions cannot see them%s (HP21)"
                     % (display(row["role"]), STATS_ROLE, replicas))


def replica_lag_warnings(session):
    """The warning of a copy whose replica-lag guard measures only what the role can see (the
    downgrade was accepted; else ``replica_lag_s`` refuses)."""
    lag = replica_lag(session)
    if lag.hidden:
        return ["the replay lag of %d of %d replica(s) cannot be read by this role (grant pg_monitor, or "
                "pg_read_all_stats): the replica-lag guard cannot hold the copy back for them" % (lag.hidden,
                                                                                                  lag.replicas)]
    return []
