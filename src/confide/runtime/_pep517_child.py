"""The child half of the runtime's PEP 517 frontend (ADR 0024): run as a script, stdlib only.

``python -I -S _pep517_child.py <build env> <backend> <wheel folder> <max bytes>``, with
the unpacked source distribution as the working directory. ``-I -S``: no user or site
folder, no ``PYTHON*`` variable; the only folder added to ``sys.path`` is the build env
(the locked build backend's wheels, checked by hash) and the source tree itself (PEP 517's
``backend-path`` is not supported: an in-tree backend is refused by the parent). Every file
this process writes is bounded by ``RLIMIT_FSIZE``. It prints the built wheel's file name
on its last line of standard output.
"""

import importlib
import resource
import sys


def main(argv: list[str]) -> int:
    build_env, backend_name, wheel_dir, max_bytes = argv[1], argv[2], argv[3], int(argv[4])
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    sys.path.insert(0, build_env)
    module_name, _, attribute = backend_name.partition(":")
    backend = importlib.import_module(module_name)
    for part in attribute.split(".") if attribute else []:
        backend = getattr(backend, part)
    name = backend.build_wheel(wheel_dir)
    sys.stdout.write(f"\n{name}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
