"""A randomized concurrent workload through the whole backfill, then an oracle.

Writer threads insert, update (plain columns, the partition key, the primary key), delete,
and run multi-statement transactions that commit or roll back — one of them in REPEATABLE
READ — while the backfill copies with two workers and per-batch verification. The full
verification runs while they still write (one snapshot per range must show no difference),
and after they stop the twin must equal the original row for row (the oracle).
"""
import random
import threading

import psycopg2
import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import verify

from ..helpers import backfill_driver as drv
from ..helpers.phase2_setup import STATE, TABLE, assert_equal_tables, make_prepared, session, state_row

ROWS = 3000

OPS = [
    "INSERT INTO public.revenues (occurred_at, region, amount) VALUES "
    "(timestamptz '2025-01-01' + %(r)s * interval '1 minute', 'eu', %(a)s)",
    "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2031-01-01', 'far', %(a)s)",  # default
    "UPDATE public.revenues SET amount = %(a)s, note = 'u' || %(a)s WHERE id = %(id)s",
    "UPDATE public.revenues SET occurred_at = timestamptz '2025-01-01' + %(r)s * interval '1 minute' "
    "WHERE id = %(id)s",
    "UPDATE public.revenues SET id = -id WHERE id = %(id)s AND id > 0",
    "DELETE FROM public.revenues WHERE id = %(id)s",
    "UPDATE public.revenues SET amount = amount + 1 WHERE id BETWEEN %(id)s AND %(id)s + 3",
]


class Writers:
    def __init__(self, pg, db, n=3, seed=None):
        self.pg, self.db, self.n = pg, db, n
        self.stop = threading.Event()
        self.errors = []
        self.done = 0
        self.rng = random.Random(seed)
        self.threads = []

    def _loop(self, i):
        conn = self.pg.connect(self.db, autocommit=False)
        if i == 0:
            conn.set_session(isolation_level="REPEATABLE READ")
        rng = random.Random(self.rng.random())
        cur = conn.cursor()
        try:
            while not self.stop.is_set():
                try:
                    for _unused in range(rng.randint(1, 3)):
                        cur.execute(rng.choice(OPS), dict(id=rng.randint(1, ROWS + 200), a=rng.randint(0, 999),
                                                          r=rng.randint(0, 360 * 1440)))
                    if rng.random() < 0.2:
                        conn.rollback()
                    else:
                        conn.commit()
                    self.done += 1
                except (psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure,
                        psycopg2.errors.UniqueViolation):
                    conn.rollback()
        except Exception as e:  # noqa: BLE001
            self.errors.append(e)
        finally:
            conn.close()

    def __enter__(self):
        self.threads = [threading.Thread(target=self._loop, args=(i,)) for i in range(self.n)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert not self.errors, self.errors


@pytest.mark.parametrize("workers", [1, 2])
def test_backfill_under_a_random_write_load_is_exact(pg, db, conn, workers):
    make_prepared(pg, db, rows=ROWS)
    seed = random.randrange(1 << 30)
    with Writers(pg, db, seed=seed) as w:
        totals = drv.copy(pg, db, batch_size=150, workers=workers, verify_batches=True)
        assert totals["done"], (seed, totals)
        s = session(pg, db)
        try:
            row = state_store.get_table(s, STATE, TABLE)
            ctx = drv.backfill.load_context(s, STATE, row)
            result = verify.verify_table(s, ctx, row)  # while the writers still write
        finally:
            s.close()
        assert result["status"] == "ok", (seed, result["differences"])
    assert w.done > 20, "the workload barely ran"
    assert state_row(conn)["phase"] == "verified"
    assert_equal_tables(conn)
