"""The backend conformance suite: what every storage backend of Walrus must do, as pytest tests.

Run it against any installed backend (or several: repeat the option, or ``all``)::

    pytest --walrus-backend=NAME --pyargs walrus_core.testing

The options and fixtures come from :mod:`walrus_core.testing.plugin`, which the ``pytest11``
entry point activates wherever walrus-core is installed. The tests are grouped by what they
exercise: ``test_storage_contract`` calls the hooks directly, through the backend's chain, the
way the engine does; ``test_log_behaviour`` runs a whole log on the backend;
``test_durability`` kills a writer process and simulates power loss (backends that declare
``durable=False`` skip it, saying so) and injects disk errors through the fault layer. Every
test's name says the hook or behaviour it checks; the storage and durability tests word each
failure as ``guarantee broken: <the guarantee>: <what was seen>``, the log tests compare what
the log returned with what was appended.
"""

from walrus_core.testing.plugin import SMALL_GEOMETRY, OpenWalrus, StorageOpener

__all__ = ["SMALL_GEOMETRY", "OpenWalrus", "StorageOpener"]
