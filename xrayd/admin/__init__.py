"""Administrator actions, each written once: callers and destinations (:mod:`.peers`), users
and API tokens (:mod:`.users`), queue jobs and deliveries (:mod:`.jobs`), model versions
(:mod:`.models`).

The command line (:mod:`xrayd.cli`), the admin pages and the admin REST API
(:mod:`xrayd.web`) are thin adapters over these functions: they parse their input, call one
service with an :class:`~xrayd.admin.actor.Actor` saying who acts and through which door, and
render the outcome. Every service validates its input with :mod:`.validation` (one rule set),
makes the change and its audit row in one transaction (through :mod:`storage`), and raises a
typed error: :class:`storage.peers.InvalidEntryError` for invalid input,
:class:`storage.errors.NotFoundError` for something that does not exist and
:class:`storage.errors.ConflictError` for a change the current state forbids.
"""
