"""Run lighteval's command line with only the custom tasks registered; executed by the eval environment.

Usage: python lighteval_run.py <lighteval arguments...>  (e.g. ``custom MODEL FILE TASK --custom-tasks F``)

lighteval 0.13 imports every built-in task module to build its registry. Offline that fails: two of
them (mt_bench, mix_eval) look up a judge model on the hub at import time, and another downloads a
pickle. quantgate evaluates its own local tasks only, so this driver registers just the custom tasks
file and then hands over to lighteval's own CLI unchanged.
"""

from __future__ import annotations

import sys


def custom_tasks_only_registry() -> None:
    """Make lighteval's registry load the ``--custom-tasks`` file and nothing else."""
    from lighteval.tasks.registry import Registry

    def custom_tasks_only(custom_tasks=None, load_multilingual=False):  # type: ignore[no-untyped-def]
        if custom_tasks is None:
            raise SystemExit("quantgate runs lighteval with --custom-tasks only")
        return Registry._extract_configs(Registry.create_custom_tasks_module(custom_tasks))

    Registry.load_all_task_configs = staticmethod(custom_tasks_only)  # type: ignore[method-assign]


def main() -> None:
    custom_tasks_only_registry()
    from lighteval.__main__ import app

    sys.argv = ["lighteval", *sys.argv[1:]]
    app()


if __name__ == "__main__":
    main()
