"""The one list of quantgate's pytest plugins (pytest allows ``pytest_plugins`` only in the root conftest)."""

pytest_plugins = [
    "plugins.options",
    "plugins.status",
    "plugins.replay",
    "plugins.history",
    "plugins.gpu",
    "plugins.budget",
    "plugins.coverage",
    "plugins.matrix",
    "plugins.lane",
    "plugins.signals",
    "pytester",
]
