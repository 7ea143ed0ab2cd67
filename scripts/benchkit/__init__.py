"""The end-to-end benchmark's parts (``scripts/bench.py`` is the entry point, ``make bench``).

``run`` drives the stages; ``people`` makes the members' keys and the import file; ``sink``
is the recording SMTP sink; ``bot`` runs ``secir-bot`` as a process and watches it; ``stack``
starts the servers and the Matrix clients; ``figures``, ``burst`` and ``extras`` measure,
``profile`` samples the bot with py-spy, ``stats`` summarises; ``report`` and ``details``
print the table and write ``docs/performance.md``.
"""
