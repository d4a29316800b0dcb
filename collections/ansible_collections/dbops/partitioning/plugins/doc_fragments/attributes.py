# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # What every module of the collection supports (with ansible.builtin.action_common_attributes).
    DOCUMENTATION = r'''
attributes:
  check_mode:
    support: full
    details: Nothing changes; the statements that would run are returned in C(queries).
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: The host that runs the module (the controller, as the playbooks run it) connects to PostgreSQL.
'''

    # The short-lock retries of a module that locks application tables.
    LOCK_RETRY = r'''
options:
  lock_timeout_ms:
    description:
      - How long one attempt waits for its locks (the application waits at most this long behind it).
      - Default the spec's C(lock_timeout_ms), else 50.
    type: int
  swap_retries:
    description:
      - Attempts after the first one, with exponential backoff and jitter between them.
      - Default the spec's C(swap_retries), else 30.
    type: int
'''
