# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet roll-outs: the order hosts run a playbook in, when a host must not start, what each
host did, and the recap of a run (docs/design.md, "Fleet roll-outs").

The playbooks' shape (playbooks/README.md) calls these through four filters: ``fleet_play``
(the play's hosts and serial batches, from ``partitioning_canary`` and ``partitioning_serial``),
``fleet_stop`` (why a host must not start its next table, or ``''``), ``fleet_record`` (a host's
record of its run, a fact every other host and the recap read through ``hostvars``) and
``fleet_recap`` (one line per host and table, and the run's verdict).

A host that fails is rescued by the play, so that Ansible never breaks the run off (it would
skip the recap, and with serial batches it stops every later batch as soon as one batch failed
entirely): its record says ``failed`` and the other hosts go on, unless the run's settings say
that this failure stops them. Every decision reads the records, so it is the same in every batch.

A host's record::

    state     running | completed | failed | stopped
    title     the play's name
    canary    whether this host is the run's canary
    reason    failed or stopped: why, in one line
    stopped_before  stopped: the table it did not begin (none: the host did not start at all)
    tables    the tables the host selected, once resolved
    current   the table in progress: {table, started}
    results   one per table done: {table, phase, rows, seconds, result, complete, detail}
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import time

from ansible.errors import AnsibleFilterError

RUNNING, COMPLETED, FAILED, STOPPED = "running", "completed", "failed", "stopped"
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("", "false", "no", "off", "0", "none", "null")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
MESSAGE_CHARS = 160     # a recap line carries this much of a failure's message (the task's output has it all)


class FleetError(AnsibleFilterError):
    """A setting of the run that cannot be honoured: the run stops before any host starts."""


# --- settings -----------------------------------------------------------------------------------

def canary_setting(value):
    """``partitioning_canary`` -> None (no canary), True (the first host of the play) or a host name."""
    if value is None or value is False:
        return None
    if value is True:
        return True
    text = str(value).strip()
    if text.lower() in _FALSE:
        return None
    if text.lower() in _TRUE:
        return True
    return text


def flag_setting(value, name):
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FleetError("%s must be true or false, not %r." % (name, value))


def percent_setting(value, name="partitioning_max_fail_percentage"):
    """A percentage 0-100 (``30``, ``"30"``, ``"30%"``), or None when unset."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    match = _PERCENT.match(str(value)) if isinstance(value, str) else None
    try:
        number = float(match.group(1) if match else value)
    except (TypeError, ValueError):
        number = -1
    if isinstance(value, bool) or not 0 <= number <= 100:
        raise FleetError("%s must be a percentage from 0 to 100, not %r." % (name, value))
    return number


def serial_setting(value):
    """``partitioning_serial`` -> the batch sizes Ansible's ``serial`` takes: a list of counts (``2``)
    and percentages (``"25%"``); ``"1,25%"`` is a list. Unset: every host in one batch."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ["100%"]
    items = value if isinstance(value, list) else str(value).split(",") if isinstance(value, str) else [value]
    out = []
    for item in items:
        text = str(item).strip()
        match = _PERCENT.match(text)
        if match and 0 < float(match.group(1)) <= 100:
            out.append(text.replace(" ", ""))
        elif not isinstance(item, bool) and text.isdigit() and int(text) > 0:
            out.append(int(text))
        else:
            raise FleetError("partitioning_serial must be a number of hosts per batch (2), a percentage of the "
                             "hosts (25%%) or a list of them (1,25%%), not %r." % (value,))
    return out


def play(pattern, canary=None, serial=None):
    """The phase play's ``hosts`` and ``serial``, and whether it has a ``canary``: the canary first,
    in a batch of its own (so the canary is the first of ``ansible_play_hosts_all``)."""
    pattern = pattern or "all"
    batches = serial_setting(serial)
    chosen = canary_setting(canary)
    if chosen is None:
        return dict(hosts=[pattern], serial=batches, canary=False)
    # A named canary is put first: Ansible orders a play's hosts as its patterns list them.
    hosts = [pattern] if chosen is True else [chosen, pattern]
    return dict(hosts=hosts, serial=[1] + batches, canary=True)


# --- when a host must not go on -----------------------------------------------------------------

def _state(record):
    return (record or {}).get("state")


def _canary_name(canary, play_hosts):
    chosen = canary_setting(canary)
    if chosen is True:
        return play_hosts[0] if play_hosts else None
    return chosen


def _check_canary_placement(name, play_hosts, batch, pattern_hosts):
    if pattern_hosts is not None and name not in pattern_hosts:
        raise FleetError("partitioning_canary %s is not one of the hosts this playbook runs on (partitioning_hosts "
                         "selects %s)." % (name, ", ".join(pattern_hosts) or "none"))
    if name not in play_hosts:
        raise FleetError("partitioning_canary %s is not among this run's hosts (%s): --limit leaves it out."
                         % (name, ", ".join(play_hosts)))
    if play_hosts[0] != name or (name in batch and len(batch) > 1):
        raise FleetError("partitioning_canary is set where the play cannot see it before it orders its hosts: give it "
                         "as an extra variable (-e partitioning_canary=%s; in AWX a survey answer or an extra "
                         "variable), not in the inventory." % name)


def _canary_verdict(name, record):
    """Why the hosts after the canary must not start, or ''."""
    state = _state(record)
    if state == COMPLETED:
        unfinished = ["%s: %s" % (r["table"], r["result"]) for r in record.get("results", []) if not r.get("complete")]
        if unfinished:
            return "the canary %s has not completed the phase (%s)" % (name, "; ".join(unfinished))
        return ""
    if state == FAILED:
        return "the canary %s failed" % name
    if state == STOPPED:
        return "the canary %s stopped" % name
    return "the canary %s has not completed the phase" % name


def stop_reason(records, host, play_hosts, batch=None, pattern_hosts=None, canary=None, any_errors_fatal=False,
                max_fail_percentage=None):
    """Why ``host`` must not start (or not start its next table), or ''.

    ``records``: host -> its record (None when it has none); ``play_hosts``: the play's hosts in
    their order (``ansible_play_hosts_all``); ``batch``: the hosts of the current batch;
    ``pattern_hosts``: the hosts that the play's pattern selects before --limit (None: unknown).
    A canary that the play did not place first, alone in its batch, is an error (FleetError):
    the run must not go on as if it had one."""
    play_hosts = list(play_hosts or [])
    name = _canary_name(canary, play_hosts)
    if name:
        _check_canary_placement(name, play_hosts, list(batch or []), pattern_hosts)
        if host != name:
            verdict = _canary_verdict(name, records.get(name))
            if verdict:
                return verdict
    failed = [h for h in play_hosts if h != host and _state(records.get(h)) == FAILED]
    if failed and flag_setting(any_errors_fatal, "partitioning_any_errors_fatal"):
        return "%s failed and partitioning_any_errors_fatal is set" % ", ".join(failed)
    limit = percent_setting(max_fail_percentage)
    if failed and limit is not None and 100.0 * len(failed) / len(play_hosts) > limit:
        return "%d of %d hosts failed (%s), more than partitioning_max_fail_percentage (%g%%)" % (
            len(failed), len(play_hosts), ", ".join(failed), limit)
    return ""


# --- a host's record ----------------------------------------------------------------------------

def _failure_message(result):
    """The message of a failed task's result (``ansible_failed_result``), also of a loop's item."""
    result = result or {}
    items = [r for r in result.get("results") or [] if isinstance(r, dict) and r.get("failed")]
    message = (items[-1] if items else result).get("msg") or result.get("msg") or ""
    if result.get("unreachable"):
        message = "UNREACHABLE: " + (message or "")
    return " ".join(str(message).split()) or "failed"


def _outcome_result(outcome, check_mode):
    if outcome.get("result"):
        return outcome["result"]
    if outcome.get("changed"):
        return "would change" if check_mode else "changed"
    return "ok"


def record(current, event, **kw):
    """``current`` (a host's record, or None) after ``event``:

    * ``start``: a new record (``title``, ``canary``, ``check_mode``); ``stop`` non-empty: stopped.
    * ``tables``: the tables the host selected (``names``).
    * ``table``: the host begins ``table``; ``stop`` non-empty: stopped before it.
    * ``done``: the current table is done; ``outcome`` = {phase, rows, changed, complete, result,
      detail} as the playbook's table tasks set it (partitioning_outcome).
    * ``failed``: ``result`` (``ansible_failed_result``) of task ``task`` failed the host.
    * ``completed``: the host went through all its tables.
    """
    now = time.time()
    rec = dict(current or {})
    rec["results"] = list(rec.get("results") or [])
    if event == "start":
        rec = dict(state=RUNNING, title=kw.get("title") or "", canary=bool(kw.get("canary")),
                   check_mode=bool(kw.get("check_mode")), reason="", tables=None, current=None, results=[],
                   started=now)
        if kw.get("stop"):
            rec.update(state=STOPPED, reason=kw["stop"])
    elif event == "tables":
        rec["tables"] = [str(n) for n in kw.get("names") or []]
    elif event == "table":
        if kw.get("stop"):
            rec.update(state=STOPPED, reason=kw["stop"], stopped_before=str(kw.get("table")), current=None)
        else:
            rec["current"] = dict(table=str(kw.get("table")), started=now)
    elif event == "done":
        outcome = dict(kw.get("outcome") or {})
        cur = rec.get("current") or {}
        rec["results"].append(dict(
            table=cur.get("table") or outcome.get("table") or "?", phase=outcome.get("phase"),
            rows=outcome.get("rows"), seconds=round(now - cur.get("started", now), 1),
            result=_outcome_result(outcome, rec.get("check_mode")),
            # in check mode nothing changes, so a check run of the canary lets the others be checked
            complete=bool(outcome.get("complete", True)) or bool(rec.get("check_mode")),
            detail=outcome.get("detail") or ""))
        rec["current"] = None
    elif event == "failed":
        message = _failure_message(kw.get("result"))
        task = kw.get("task") or ""
        reason = ('at "%s": %s' % (task, message)) if task else message
        cur = rec.get("current")
        if cur:
            rec["results"].append(dict(table=cur["table"], phase=None, rows=None,
                                       seconds=round(now - cur.get("started", now), 1), result="FAILED",
                                       complete=False, detail=reason))
        rec.update(state=FAILED, reason=reason, current=None)
    elif event == "completed":
        if rec.get("state") == RUNNING:
            rec["state"] = COMPLETED
    else:
        raise AnsibleFilterError("fleet_record: unknown event %r" % (event,))
    return rec


# --- the recap ----------------------------------------------------------------------------------

def _rows(value):
    if value is None or value == "":
        return "-"
    try:
        return "{:,}".format(int(value))
    except (TypeError, ValueError):
        return str(value)


def _duration(seconds):
    if seconds is None:
        return "-"
    seconds = int(round(float(seconds)))
    return "%d:%02d:%02d" % (seconds // 3600, seconds % 3600 // 60, seconds % 60)


def _short(text):
    text = " ".join(str(text or "").split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 1] + "…"


def _result_text(result):
    detail = _short(result.get("detail"))
    if not detail:
        return result["result"]
    return result["result"] + ((" " + detail) if result["result"] == "FAILED" else " (%s)" % detail)


def _host_rows(host, rec, selected):
    """``(rows, why)``: the host's rows (host, table, phase, rows, duration, result) and, when it did
    not get through, why."""
    done = rec.get("results") or []
    rows = [(host, r["table"], r.get("phase") or "-", _rows(r.get("rows")), _duration(r.get("seconds")),
             _result_text(r)) for r in done]
    current = (rec.get("current") or {}).get("table")
    names = rec.get("tables") if rec.get("tables") is not None else selected or [current or "-"]
    left = [n for n in names if n not in set(r["table"] for r in done)]
    state = rec.get("state")
    if state == COMPLETED:
        return rows, None
    if state == FAILED:
        why = "failed " + rec.get("reason", "")
        if left and not (done and done[-1]["result"] == "FAILED"):     # it failed before beginning a table
            rows.append((host, left.pop(0), "-", "-", "-", "FAILED " + _short(rec.get("reason"))))
        results = ["not started: this host failed"] * len(left)
    elif state == STOPPED:
        before = rec.get("stopped_before")
        why = ("stopped before %s: " % before if before else "not started: ") + rec.get("reason", "")
        results = ["not started: " + _short(rec.get("reason"))] * len(left)
    else:
        why = ("interrupted during %s (unreachable, or the run was stopped)" % current) if current else (
            "no result (unreachable, or the run was stopped before it)")
        results = [why] * len(left)
    return rows + [(host, name, "-", "-", "-", result) for name, result in zip(left, results)], why


def recap(records, play_hosts, selected=None):
    """The run's recap: ``lines`` (a headline, then one line per host and table), the hosts that
    ``completed``, ``failed``, were ``stopped`` (because of another host's failure or an unfinished
    canary) or were ``interrupted`` (no end recorded: unreachable, or the run was killed), the
    ``reasons`` of every host that did not get through, and ``ok`` (every host got through).
    ``selected``: host -> the table names it would have run, for hosts that never listed theirs."""
    selected = selected or {}
    rows, reasons, title = [], {}, ""
    by_state = dict((state, []) for state in (COMPLETED, FAILED, STOPPED, RUNNING))
    for host in play_hosts:
        rec = records.get(host) or {}
        title = title or rec.get("title") or ""
        host_rows, why = _host_rows(host, rec, selected.get(host))
        rows.extend(host_rows)
        by_state[rec.get("state") if rec.get("state") in by_state else RUNNING].append(host)
        if why:
            reasons[host] = why
    completed, failed, stopped, interrupted = (by_state[s] for s in (COMPLETED, FAILED, STOPPED, RUNNING))
    counts = [("%d completed" % len(completed))]
    for label, hosts in (("failed", failed), ("stopped", stopped), ("interrupted", interrupted)):
        if hosts:
            counts.append("%d %s (%s)" % (len(hosts), label, ", ".join(hosts)))
    canary = [h for h in play_hosts if (records.get(h) or {}).get("canary")]
    headline = "%s: %d host%s, %s%s" % (title or "run", len(play_hosts), "" if len(play_hosts) == 1 else "s",
                                        ", ".join(counts), ("; canary " + canary[0]) if canary else "")
    header = ("host", "table", "phase", "rows", "duration", "result")
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(5)]
    lines = [headline] + ["  ".join(str(v).ljust(w) for v, w in zip(r[:5], widths)) + "  " + r[5]
                          for r in [header] + rows]
    return dict(lines=lines, failed=failed, stopped=stopped, interrupted=interrupted, completed=completed,
                reasons=reasons, ok=not reasons)
