"""Where the checkout and the collection are (tests run ansible-playbook, modules and ``python -m``
from the checkout root, as an operator does)."""
import os

COLLECTION = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
ROOT = os.path.abspath(os.path.join(COLLECTION, os.pardir, os.pardir, os.pardir, os.pardir))
MODULES = os.path.join(COLLECTION, "plugins", "modules")
