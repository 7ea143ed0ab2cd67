"""The end-to-end benchmark's parts (``scripts/bench.py`` is the entry point, ``make bench``).

``people`` makes the members' keys and the import file, ``sink`` is the recording SMTP sink,
``bot`` runs ``secir-bot run`` as a process and watches it, ``stack`` starts the servers and
the Matrix clients, ``figures`` measures, and ``report`` prints the table and writes
``docs/performance.md``.
"""
