"""``python -m drtrain_study``: the same as the ``drtrain-study`` command."""
from drtrain_study.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
