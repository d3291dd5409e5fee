"""Imported by ``opentalking_flashhead_autoload.pth`` at every interpreter start: keep it tiny.

It only adds a finder to ``sys.meta_path`` that stays silent until OpenTalking imports one of
the modules whose names are listed below; then it lets the plugin loader
(``opentalking_flashhead.host.opentalking``) adjust that module right after it has executed.
The top-level package is listed so that a release or a package layout the adapter does not know
is reported as soon as the host starts, even when no seam module is ever imported.
It imports nothing at start-up and never raises.
"""

import sys

TARGETS = frozenset(
    {
        "opentalking",
        "opentalking.providers.synthesis.flashhead",
        "opentalking.providers.synthesis.availability",
        "apps.api.routes.models",
    }
)


class PluginFinder:
    """A meta-path finder that finds nothing itself; it wraps the real loader of the target modules."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    _wrap(spec.loader, fullname)
                return spec
        return None


def _wrap(loader, fullname):
    execute = loader.exec_module

    def exec_module(module):
        execute(module)
        _apply(fullname, module)

    loader.exec_module = exec_module


def _apply(fullname, module):
    try:
        from opentalking_flashhead.host.opentalking import on_import

        on_import(fullname, module)
    except Exception as exc:  # a plugin must never take the host down
        print(f"opentalking plugins: could not adjust {fullname}: {exc!r}", file=sys.stderr)


def install():
    if not any(isinstance(finder, PluginFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, PluginFinder())


try:  # noqa: SIM105 (contextlib would cost an import at every interpreter start)
    install()
except Exception:  # never break interpreter start-up
    pass
