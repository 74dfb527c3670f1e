"""The live monitor over HTTP: a JSON API under ``/api``, server-sent events, and a web page.

``outspool serve`` runs it (:func:`outspool.web.server.serve`);
:func:`outspool.web.app.create_app` builds the ASGI app around an open
:class:`~outspool.client.Outspool`. Needs the ``web`` extra.
"""
