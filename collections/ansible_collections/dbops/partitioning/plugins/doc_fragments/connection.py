# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # What every module of the collection shares: the standard connection options, named as in
    # community.postgresql, the attributes (all support check mode, none diff mode) and the authors.
    DOCUMENTATION = r'''
options:
  login_host:
    description: Host running PostgreSQL. Empty means the local Unix socket (see I(login_unix_socket)).
    type: str
    default: ''
    aliases: [host]
  port:
    description: Database port.
    type: int
    default: 5432
    aliases: [login_port]
  login_user:
    description: The role to connect as.
    type: str
    default: postgres
    aliases: [login]
  login_password:
    description: Its password. Vault it; it is never logged.
    type: str
    default: ''
  login_unix_socket:
    description: Directory of the Unix socket, used instead of I(login_host) when set.
    type: str
    default: ''
  login_db:
    description: The database to operate on.
    type: str
    default: postgres
    aliases: [db, database]
  ssl_mode:
    description: libpq sslmode.
    type: str
    default: prefer
    choices: [allow, disable, prefer, require, verify-ca, verify-full]
  ca_cert:
    description: Certificate authority file (libpq sslrootcert).
    type: path
    aliases: [ssl_rootcert]
  ssl_cert:
    description: Client certificate file.
    type: path
  ssl_key:
    description: Client key file.
    type: path
  connect_params:
    description: Any other libpq connection parameters, as a dictionary.
    type: dict
    default: {}
  connect_timeout:
    description: Seconds to wait for the connection.
    type: int
    default: 10
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the database.
    support: full
    details: Nothing changes; the statements that would run are returned in C(queries).
  diff_mode:
    description: Would return details on what has changed in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
    details: The host that runs the module (the controller, as the playbooks run it) connects to PostgreSQL.
notes:
  - Sessions run with C(TimeZone=UTC) so that partition bounds never depend on the server's time zone.
requirements:
  - psycopg2 (psycopg2-binary) on the host that runs the module
author:
  - dbops.partitioning maintainers (@dbops-partitioning)
'''
