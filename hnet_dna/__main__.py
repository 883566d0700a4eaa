"""``python -m hnet_dna fit|validate|test|predict --config FILE``: the Lightning CLI
(:mod:`hnet_dna.cli`)."""

from .cli import main

if __name__ == "__main__":
    from . import backends

    backends.keep_freed_memory()  # long windows: no page faults of every activation on every step
    main()
