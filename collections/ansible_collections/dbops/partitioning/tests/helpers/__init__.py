"""What several test files share: paths of the checkout, test tables brought to a phase,
phase 2 driven in-process, and playbooks run as an operator runs them.

- ``paths``: the checkout root and the collection.
- ``playbook_runner``: ``run_playbook`` against a test server.
- ``sync_helpers``: an original and a hand-made twin with the sync triggers installed.
- ``phase2_setup``: a table that phase 1 brought to 'prepared'.
- ``backfill_driver``: phase 2's copy driven in-process, and modules run as subprocesses.
- ``phase3_setup``: a table brought to 'verified' (or through phases 1 to 3 as a given role), and an
  application-like write load with an oracle.
- ``render_sql``: composed SQL printed without a server (unit tests of pure statement builders).
- ``swap_pair``: a captured switchover pair built by hand (unit tests of the switchover's pure pieces).
- ``roles``: a table owner without superuser, as managed PostgreSQL gives one, and sessions as it.
"""
